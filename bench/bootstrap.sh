#!/usr/bin/env bash
# What `make bench` needs beyond `make test`'s environment: Debian's restic (a peer the
# benchmark compares against) and gzip. Then the project's own bootstrap (uv, .venv, sqlite3, tar).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
missing=()
for pkg in restic gzip; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "bench/bootstrap: missing Debian packages: ${missing[*]} (run as root or install them)" >&2
        exit 1
    fi
    echo "bench/bootstrap: installing Debian packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
