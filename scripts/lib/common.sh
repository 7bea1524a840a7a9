# Shared by backup-databases.sh and restore-databases.sh: status output and finding the CLI.
# shellcheck shell=bash

if [[ -t 1 && -t 2 && -z "${NO_COLOR:-}" ]]; then
    C_INFO=$'\e[34m' C_OK=$'\e[32m' C_WARN=$'\e[33m' C_ERR=$'\e[31m' C_OFF=$'\e[0m'
else
    C_INFO='' C_OK='' C_WARN='' C_ERR='' C_OFF=''
fi
info() { printf '%s==>%s %s\n' "$C_INFO" "$C_OFF" "$*" >&2; }
ok() { printf '%sok:%s %s\n' "$C_OK" "$C_OFF" "$*" >&2; }
warn() { printf '%swarning:%s %s\n' "$C_WARN" "$C_OFF" "$*" >&2; }
fail() { printf '%serror:%s %s\n' "$C_ERR" "$C_OFF" "$*" >&2; }
usage_error() {
    fail "$*"
    echo "Try '$(basename "$0") --help'." >&2
    exit 2
}

# The backup-sidecar command line, as an array (CLI is read by the scripts that source this).
# shellcheck disable=SC2034
find_cli() {
    local root
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
    if [[ -n "${BACKUP_SIDECAR_BIN:-}" ]]; then
        read -r -a CLI <<<"$BACKUP_SIDECAR_BIN"
    elif command -v backup-sidecar >/dev/null 2>&1; then
        CLI=(backup-sidecar)
    elif [[ -f "$root/pyproject.toml" ]] && grep -q '^name = "backup-sidecar"' "$root/pyproject.toml" &&
        command -v uv >/dev/null 2>&1; then
        CLI=(uv run --quiet --frozen --project "$root" backup-sidecar)
    else
        CLI=(python3 -m backup_sidecar)
    fi
}

need_value() {
    [[ $# -ge 2 && -n "$2" && "$2" != --* ]] || usage_error "$1 needs a value"
}
