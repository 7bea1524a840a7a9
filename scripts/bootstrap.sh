#!/usr/bin/env bash
# Install everything `make demo` and `make test` need, from the package registries only:
# uv (from PyPI, if missing), the locked Python environment in .venv, and the Debian tools the
# tests drive for real (GNU tar, sqlite3; promtool, prometheus, libfaketime, Compose v1 and the
# web page's headless browser, chromium with its chromedriver, with --with-prometheus).
set -euo pipefail
cd "$(dirname "$0")/.."

want_debs=(tar sqlite3)
if [[ "${1:-}" == "--with-prometheus" ]]; then
    # faketime: the wall-clock fault tests (libfaketime). docker-compose: Compose v1 (1.29.2),
    # which the compose tests merge the override with (v2 comes with the locked environment);
    # `config` needs no container engine.
    # chromium + chromium-driver: the web page's browser test (selenium drives Debian's own
    # chromedriver; no browser is downloaded).
    # restic: a peer in the incremental benchmark, whose smoke test runs with the tests.
    want_debs+=(prometheus faketime docker-compose chromium chromium-driver restic)
fi

missing=()
for pkg in "${want_debs[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "bootstrap: missing Debian packages: ${missing[*]} (run as root or install them)" >&2
        exit 1
    fi
    echo "bootstrap: installing Debian packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # --no-install-recommends keeps the prometheus package from pulling in a whole node exporter.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian starts the prometheus service on install; the tests run their own on loopback.
    if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null; then
        systemctl stop prometheus 2>/dev/null || true
    fi
fi

if ! command -v uv >/dev/null 2>&1; then
    echo "bootstrap: installing uv from PyPI" >&2
    python3 -m pip install --quiet --disable-pip-version-check "uv>=0.4"
fi

uv sync --frozen --quiet
