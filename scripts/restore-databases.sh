#!/usr/bin/env bash
# List, verify and restore ArrowTuner database backups through backup-sidecar (the seed's flags).
# When a sidecar daemon is running (its control socket answers `ctl ping`), list/verify/restore
# go through the daemon, so a restore started in the app container is done by the sidecar.
# The CLI decides the exit code (0 ok, 1 failed or refused, 2 bad usage); its errors pass through.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: restore-databases.sh --list
       restore-databases.sh --verify --file ARCHIVE
       restore-databases.sh --file ARCHIVE [--arrow-db-only | --user-db-only]
                            [--force] [--dry-run] [--config PATH]

  --list             list the archives, newest first
  --file ARCHIVE     the archive: a name, NAME.tar.gz, or a path to it
  --verify           with --file: verify the archive completely, restore nothing
  --arrow-db-only    restore only the arrow database (arrow_database.db)
  --user-db-only     restore only the user database (user_data.db)
  --force            do not ask for confirmation (required without a terminal)
  --dry-run          verify and show what a restore would do; change nothing
  --config PATH      backup-sidecar configuration file (default: $SIDECAR_CONFIG)
  -h, --help         show this help

A restore verifies the archive, takes a pre-restore safety backup of every database it will
replace, then restores into the live files while the application keeps running.

If the control socket ${SIDECAR_SOCKET:-/run/backup-sidecar/control.sock} exists and the daemon
answers, `backup-sidecar ctl ...` is used for an archive given by name. An archive given as a
path (anything with a '/') is verified and restored by the local CLI: exactly that file, never
an archive of the same name in the daemon's backup directory. The CLI is
$BACKUP_SIDECAR_BIN if set, else backup-sidecar on PATH, else `uv run backup-sidecar` in this
checkout, else `python3 -m backup_sidecar`.

Examples:
  restore-databases.sh --list
  restore-databases.sh --verify --file backup.tar.gz
  restore-databases.sh --file backup.tar.gz --user-db-only
  restore-databases.sh --file backup.tar.gz --force
EOF
}

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

# Run the CLI; on failure say so and exit with the CLI's own code.
run() {
    local what="$1" rc=0
    shift
    "${CLI[@]}" "${global[@]}" "$@" || rc=$?
    if ((rc != 0)); then
        fail "$what failed (exit $rc)"
        exit "$rc"
    fi
}

action='' file='' db='' force=0 dry_run=0 config=''
while [[ $# -gt 0 ]]; do
    case "$1" in
    --list) action=list; shift ;;
    --verify) [[ "$action" == list ]] || action=verify; shift ;;
    --file) need_value "$@"; file="$2"; shift 2 ;;
    --file=*) file="${1#*=}"; shift ;;
    --arrow-db-only | --user-db-only)
        want="${1#--}"
        want="${want%-db-only}"
        [[ -z "$db" || "$db" == "$want" ]] || usage_error "use only one of --arrow-db-only and --user-db-only"
        db="$want"; shift ;;
    --force) force=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    --config) need_value "$@"; config="$2"; shift 2 ;;
    --config=*) config="${1#*=}"; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage_error "unknown option: $1" ;;
    esac
done
if [[ -z "$action" ]]; then
    [[ -n "$file" ]] || usage_error "nothing to do: give --list, or --file ARCHIVE (see --help)"
    action=restore
fi
[[ "$action" == list || -n "$file" ]] || usage_error "--verify needs --file ARCHIVE"

find_cli
global=()
[[ -n "$config" ]] && global+=(--config "$config")

# Use the running daemon when its control socket answers.
socket="${SIDECAR_SOCKET:-/run/backup-sidecar/control.sock}"
use_ctl=0
if [[ -S "$socket" ]]; then
    export SIDECAR_CONTROL__SOCKET="$socket"
    if "${CLI[@]}" "${global[@]}" ctl ping >/dev/null 2>&1; then
        use_ctl=1
    else
        warn "control socket $socket does not answer; running locally"
    fi
fi

# Over the socket archives are named, never pathed. A path (anything with a '/', as the CLI
# reads it) names exactly that file, which the daemon cannot be trusted to see: its backup
# directory may hold another archive of the same name (or, in another container, the same path
# may be another file). So a path is verified and restored by the local CLI, never cut to its
# bare name and handed to the daemon.
archive_name="${file%.tar.gz}"
if [[ "$file" == */* && "$action" != list ]] && ((use_ctl)); then
    warn "--file $file is a path: using the local CLI on that file, not the daemon (give the archive's name to go through the daemon)"
    use_ctl=0
fi

case "$action" in
list)
    if ((use_ctl)); then run list ctl list; else run list list; fi
    ;;
verify)
    info "verifying $file"
    if ((use_ctl)); then run verify ctl verify "$archive_name"; else run verify verify "$file"; fi
    ok "archive verified"
    ;;
restore)
    db_args=()
    [[ -n "$db" ]] && db_args=(--db "$db")
    target="${db:-all} database(s)"
    if ((dry_run)); then
        # The socket has no dry run; a dry run only reads, so the local CLI does it.
        info "dry run: restore of $target from $file"
        run "dry run" restore "$file" "${db_args[@]}" --dry-run
    elif ((use_ctl)); then
        if ((!force)); then
            [[ -t 0 ]] || { fail "restore refused: no terminal to confirm on; pass --force to restore"; exit 1; }
            read -r -p "Replace the live $target with the content of $archive_name? [y/N] " answer
            [[ "$answer" =~ ^[Yy]([Ee][Ss])?$ ]] || { fail "restore refused: not confirmed"; exit 1; }
        fi
        info "restoring $target from $archive_name through the sidecar daemon"
        run restore ctl restore "$archive_name" "${db_args[@]}" --force
        ok "restore complete"
    else
        info "restoring $target from $file"
        force_args=()
        ((force)) && force_args=(--force)
        run restore restore "$file" "${db_args[@]}" "${force_args[@]}"
        ok "restore complete"
    fi
    ;;
esac
