"""The web page's HTML: server-rendered, readable without JavaScript, every value escaped.

htmx (vendored, static/) only enhances the forms: with it an action's answer replaces the
page's ``<main>`` in place (no reload, the scroll position kept); without it the same POST
answers the whole page.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from backup_sidecar.control.results import (
    ArchiveEntry,
    ArchiveOffsiteCopy,
    RestoreResult,
    StatusResult,
)
from backup_sidecar.service.ui_events import RecentEvent
from backup_sidecar.service.ui_html import e, form, hidden, human_age, human_size
from backup_sidecar.service.ui_pages_offsite import copy_cell

HTMX = "htmx-2.0.4.min.js"
#: htmx swaps a refusal's page (503 while the daemon stops) like an answer; others stay errors.
HTMX_CONFIG = (
    '{"includeIndicatorStyles":false,"responseHandling":[{"code":"204","swap":false},'
    '{"code":"503","swap":true},{"code":"[23]..","swap":true},'
    '{"code":"[45]..","swap":false,"error":true}]}'
)
#: What the page offers to restore: the same kinds the socket's `restore` takes by name.
RESTORABLE_KINDS = frozenset({"archive", "incremental"})
_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}"
    "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}"
    "th{background:#f3f3f3}.bad{color:#b00020;font-weight:bold}.good{color:#146c2e}"
    "#outcome{padding:.5em 1em;margin:1em 0;border:2px solid #888;background:#fafafa}"
    "form{display:inline;margin:0}"
)


def page(title: str, body: str) -> bytes:
    """A whole page; the stylesheet is inline-free (CSP), htmx is the vendored copy."""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{e(title)} - backup-sidecar</title>"
        f"<meta name=\"htmx-config\" content='{HTMX_CONFIG}'>"
        '<link rel=stylesheet href="/static/ui.css">'
        f'<script src="/static/{HTMX}" defer></script></head><body>'
        f'<h1><a href="/">backup-sidecar</a>: {e(title)}</h1><main id=main>{body}</main>'
        "</body></html>"
    ).encode()


def stylesheet() -> bytes:
    return _STYLE.encode()


def outcome(lines: Iterable[str] = (), *, error: str | None = None) -> str:
    """The box an action's result goes in (an error shown in one line)."""
    inner = "".join(f"<div>{line}</div>" for line in lines)
    if error is not None:
        inner += f"<div class=bad role=alert>{e(error)}</div>"
    return f"<div id=outcome aria-live=polite>{inner or 'No action yet.'}</div>"


def status_section(
    status: StatusResult,
    *,
    rpo: Mapping[str, timedelta],
    newest_good: Mapping[str, datetime],
    now: datetime,
) -> str:
    verdict = (
        "<span class=good>healthy</span>" if status.healthy else "<span class=bad>unhealthy</span>"
    )
    reasons = "".join(f"<li class=bad>{e(r)}</li>" for r in status.reasons)
    reasons += "".join(f"<li>not known yet: {e(u)}</li>" for u in status.unknown)
    dbs = "".join(_database_row(name, path, status) for name, path in status.databases.items())
    rows = []
    for policy in sorted(set(status.next_runs) | set(rpo) | set(newest_good)):
        good = newest_good.get(policy)
        age = human_age((now - good).total_seconds()) if good else "none"
        late = policy in rpo and (good is None or now - good > rpo[policy])
        age_cell = (
            f"<td class={'bad' if late else 'good'}>{e(age)}</td>"
            if policy in rpo
            else f"<td>{e(age)}</td>"
        )
        limit = human_age(rpo[policy].total_seconds()) if policy in rpo else "-"
        rows.append(
            f"<tr><td>{e(policy)}</td><td>{e(limit)}</td>{age_cell}"
            f"<td>{e(status.next_runs.get(policy) or '-')}</td></tr>"
        )
    return (
        f"<h2>Status</h2><p>Daemon {e(status.version)}: {verdict}</p><ul>{reasons}</ul>"
        f"<p>Backup directory <code>{e(status.backup_dir)}</code></p>"
        "<table id=databases><tr><th>database</th><th>live file</th><th>health</th><th>size</th>"
        f"<th>WAL</th><th>free pages</th></tr>{dbs}</table>"
        "<table><tr><th>policy</th><th>RPO (max backup age)</th><th>newest good backup</th>"
        f"<th>next run</th></tr>{''.join(rows)}</table>"
    )


def _database_row(name: str, path: str, status: StatusResult) -> str:
    check = status.checks.get(name)
    cells = ["not checked yet", "-", "-", "-"]
    if check is not None:
        health = {True: "<span class=good>healthy</span>", None: "not known yet"}.get(
            check.healthy, f"<span class=bad>unhealthy: {e(check.error)}</span>"
        )

        def size(n: int | None) -> str:
            return e(human_size(n)) if n is not None else "-"

        free = "-"
        if check.freelist_count is not None and check.page_count:
            share = 100 * check.freelist_count / check.page_count
            free = f"{check.freelist_count} ({share:.1f}%)"
        cells = [health, size(check.size_bytes), size(check.wal_size_bytes), e(free)]
    tail = "".join(f"<td>{c}</td>" for c in cells)
    return f"<tr><td>{e(name)}</td><td><code>{e(path)}</code></td>{tail}</tr>"


def archives_section(
    archives: list[ArchiveEntry],
    *,
    csrf: str,
    now: datetime,
    copies: Mapping[str, ArchiveOffsiteCopy] | None = None,
) -> str:
    """Every archive; with ``copies`` (offsite configured) each one's copy offsite."""
    rows = []
    for a in archives:
        status = e(a.status) + (f": {e(a.error)}" if a.error else "")
        status += f" (copy of <code>{e(a.copy_of)}</code>)" if a.copy_of else ""
        cls = "good" if a.verified else ("bad" if a.error else "")
        age = human_age((now - datetime.fromisoformat(a.created_at)).total_seconds())
        actions = form("/verify", "verify", csrf, hidden("archive", a.name))
        if a.kind in RESTORABLE_KINDS:  # a tar.gz archive or an incremental backup (page store)
            actions += " " + form(
                "/restore/plan", "restore…", csrf, hidden("archive", a.name), enhance=False
            )
        rows.append(
            f"<tr><td><code>{e(a.name)}</code></td><td>{e(a.policy)}</td><td>{e(a.kind)}</td>"
            f"<td>{e(age)}</td><td>{e(human_size(a.size_bytes))}</td>"
            f"<td class={cls or 'plain'}>{status}</td>"
            f"{copy_cell(a.name, copies) if copies is not None else ''}<td>{actions}</td></tr>"
        )
    table = "".join(rows) or "<tr><td colspan=8>No archives yet.</td></tr>"
    offsite = "<th>offsite copy</th>" if copies is not None else ""
    return (
        f"<h2>Archives ({len(archives)})</h2><table id=archives><tr><th>name</th><th>policy</th>"
        f"<th>kind</th><th>age</th><th>size</th><th>status</th>{offsite}<th>actions</th></tr>"
        f"{table}</table>"
    )


def backup_form(policies: Iterable[str], *, csrf: str) -> str:
    options = "".join(f'<option value="{e(p)}">{e(p)}</option>' for p in policies)
    select = f"<label>policy <select name=policy>{options}</select></label> "
    return f"<h2>Back up now</h2>{form('/backup', 'Back up now', csrf, select)}"


def restore_plan_page(
    plan: RestoreResult,
    *,
    csrf: str,
    copy: str | None = None,
    latest: bool = False,
    dbs: list[str] | None = None,
) -> bytes:
    """The dry run's plan and the typed-name confirm (``copy``: the offsite copy fetched;
    ``latest``: each database from its newest offsite copy, confirmed by typing ``latest``)."""
    steps = "".join(f"<li>{e(step)}</li>" for step in plan.plan)
    damaged = "".join(f"<li class=bad>{e(d)}</li>" for d in plan.damaged)
    damaged += "".join(
        f"<li class=bad>no offsite copy holds {e(n)}</li>" for n in plan.not_found or []
    )
    name = "latest" if latest else plan.archive or ""
    typed = (
        f"<label>Type {'' if latest else 'the archive name '}<code>{e(name)}</code> to confirm: "
        "<input name=confirm_name autocomplete=off required></label> "
    )
    fields = [typed] if latest else [hidden("archive", plan.archive or ""), typed]
    dbs = dbs or plan.restored
    if len(dbs) > 1:  # a choice: only some of the databases
        boxes = "".join(
            f'<label><input type=checkbox name=db value="{e(db)}" checked> {e(db)}</label> '
            for db in dbs
        )
        fields[-1:-1] = [hidden("pick", "1"), f"<p>Restore only: {boxes}</p>"]
    what = f"<code>{e(plan.archive)}</code>"
    if copy is not None or latest:  # fetched from the offsite store (checked, now in backup_dir)
        fields.insert(0, hidden("from", "offsite"))
        what += f" from the offsite copy <code>{e(copy)}</code>" if copy else ""
    if latest:
        fields.insert(0, hidden("latest", "1"))
        picked = ", ".join(f"{db} from {a}" for db, a in sorted((plan.databases or {}).items()))
        what = f"each database from its newest confirmed offsite copy ({e(picked)})"
    body = (
        f"<p>Restoring {what} replaces the live databases "
        f"{e(', '.join(dbs))}. A <code>pre_restore</code> safety archive is taken "
        f"first. The plan (nothing has changed yet):</p><ol>{steps}</ol><ul>{damaged}</ul>"
        + form("/restore", "Restore now", csrf, *fields)
        + ' <a href="/">cancel</a>'
        + progress_box([])
    )
    return page(f"restore {name}?", body)


def restore_done_lines(result: RestoreResult) -> list[str]:
    source = f"<code>{e(result.archive)}</code>"
    if result.archive is None:  # several offsite copies (`latest`)
        source = ", ".join(
            f"<code>{e(a)}</code>" for a in sorted(set((result.databases or {}).values()))
        )
    lines = [f"Restored {e(', '.join(result.restored))} from {source}."]
    if result.pre_restore_archive:
        lines.append(
            "To undo, restore the safety archive "
            f"<code id=pre-restore>{e(result.pre_restore_archive)}</code>."
        )
    elif result.pre_restore_archives:
        safety = ", ".join(
            f"<code class=pre-restore>{e(a)}</code>" for a in result.pre_restore_archives
        )
        lines.append(f"To undo, restore the safety archives {safety}.")
    lines += [f"<span class=bad>saved although damaged: {e(d)}</span>" for d in result.damaged]
    return lines


def events_section(events: list[RecentEvent], *, now: datetime) -> str:
    """The daemon's recent backups, restores, scrubs, drills and prunes, newest first."""
    rows = "".join(
        f"<tr><td>{e(human_age((now - ev.at).total_seconds()))} ago</td><td>{e(ev.kind)}</td>"
        f"<td><code>{e(ev.subject)}</code></td>"
        f"<td class={'good' if ev.ok else 'bad'}>{'ok' if ev.ok else 'failed'}</td>"
        f"<td>{e(ev.detail)}</td></tr>"
        for ev in events
    )
    rows = rows or "<tr><td colspan=5>Nothing since the daemon started.</td></tr>"
    return (
        "<h2>Recent events</h2><table id=events><tr><th>when</th><th>what</th><th>of</th>"
        f"<th>outcome</th><th>detail</th></tr>{rows}</table>"
    )


def progress_box(running: list[tuple[str, str, int, int]], *, every: str = "500ms") -> str:
    """What the page's operations are doing now; with htmx it asks again ``every`` (while an
    action's POST runs, its stages appear live: a restore's, a backup's, a verify's)."""
    lines = []
    for op, stage, done, total in running:
        share = ""
        if total > 0:  # (an operation just started has no total yet)
            share = f" {100 * done / total:.0f}% ({human_size(done)} of {human_size(total)})"
        lines.append(f"<div>{e(op)}: {e(stage)}{share}</div>")
    return (
        f'<div id=progress hx-get="/progress?every={every}" hx-trigger="every {every}" '
        'hx-swap="outerHTML">'
        f"{''.join(lines)}</div>"
    )
