#!/usr/bin/env bash
# Take a backup of the ArrowTuner databases through backup-sidecar (the seed's flags).
# Works in the app or sidecar container and on the host; the CLI does the work and decides the
# exit code (0 ok, 1 failed, 2 bad usage). Status lines go to stderr, the archive path to stdout.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: backup-databases.sh [--name NAME] [--arrow-db-only | --user-db-only]
                           [--cleanup [--keep N]] [--config PATH]

Take one consistent backup of the ArrowTuner databases now and print the archive path.

  --name NAME        archive name (default: manual_<UTC time>)
  --arrow-db-only    only the arrow database (arrow_database.db)
  --user-db-only     only the user database (user_data.db)
  --cleanup          afterwards, delete old manual archives: backup-sidecar cleanup --policy manual --keep N
  --keep N           with --cleanup: archives to keep (default 5)
  --config PATH      backup-sidecar configuration file (default: $SIDECAR_CONFIG)
  -h, --help         show this help

The CLI is $BACKUP_SIDECAR_BIN if set, else backup-sidecar on PATH, else
`uv run backup-sidecar` in this checkout, else `python3 -m backup_sidecar`.

Examples:
  backup-databases.sh
  backup-databases.sh --name production_backup_2025_08_04
  backup-databases.sh --user-db-only
  backup-databases.sh --cleanup --keep 5
EOF
}

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

name='' only='' cleanup=0 keep=5 config=''
while [[ $# -gt 0 ]]; do
    case "$1" in
    --name) need_value "$@"; name="$2"; shift 2 ;;
    --name=*) name="${1#*=}"; shift ;;
    --arrow-db-only | --user-db-only)
        [[ -z "$only" || "$only" == "$1" ]] || usage_error "use only one of --arrow-db-only and --user-db-only"
        only="$1"; shift ;;
    --cleanup) cleanup=1; shift ;;
    --keep) need_value "$@"; keep="$2"; shift 2 ;;
    --keep=*) keep="${1#*=}"; shift ;;
    --config) need_value "$@"; config="$2"; shift 2 ;;
    --config=*) config="${1#*=}"; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage_error "unknown option: $1" ;;
    esac
done
[[ "$keep" =~ ^[0-9]+$ ]] || usage_error "--keep needs a whole number, got '$keep'"

find_cli
global=()
[[ -n "$config" ]] && global+=(--config "$config")

args=(backup)
[[ -n "$name" ]] && args+=(--name "$name")
[[ -n "$only" ]] && args+=("$only")

info "backing up${only:+ (${only#--})}"
rc=0
"${CLI[@]}" "${global[@]}" "${args[@]}" || rc=$?
if ((rc != 0)); then
    fail "backup failed (exit $rc)"
    exit "$rc"
fi
ok "backup complete"

if ((cleanup)); then
    info "cleaning up: keeping the $keep most recent archives"
    "${CLI[@]}" "${global[@]}" cleanup --policy manual --keep "$keep" || rc=$?
    if ((rc != 0)); then
        fail "cleanup failed (exit $rc)"
        exit "$rc"
    fi
    ok "cleanup complete"
fi
