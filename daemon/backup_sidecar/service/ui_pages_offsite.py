"""The web page's offsite parts: the offsite section (the uploader's state, the lag, each
policy's newest confirmed copy with a restore from it) and each archive's copy cell."""

from __future__ import annotations

from collections.abc import Mapping

from backup_sidecar.control.results import ArchiveOffsiteCopy, OffsiteStatusResult
from backup_sidecar.service.ui_html import e, form, hidden, human_age


def offsite_section(offsite: OffsiteStatusResult | None, *, csrf: str) -> str:
    """The uploader's state, the lag, each policy's newest confirmed copy (to restore)."""
    if offsite is None or not offsite.configured:
        return ""
    newest = "".join(
        f"<tr><td>{e(p)}</td><td><code>{e(c.object)}</code></td>"
        f"<td>{e(human_age(c.age_seconds))}</td><td>{_restore(c.object, csrf)}</td></tr>"
        for p, c in sorted(offsite.newest.items())
    )
    error = f"<p class=bad>last error: {e(offsite.last_error)}</p>" if offsite.last_error else ""
    error += "".join(f"<p class=bad>lagging: {e(line)}</p>" for line in offsite.lagging)
    writable = {
        True: "writable",
        False: f"read-only (lease held by {offsite.holder})",
        None: "unknown yet",
    }
    return (
        f"<h2>Offsite</h2><p><code>{e(offsite.url)}</code>: {e(writable[offsite.writable])}; "
        f"{e(offsite.pending if offsite.pending is not None else '?')} archives pending</p>{error}"
        "<table id=offsite-newest><tr><th>policy</th><th>newest confirmed copy</th><th>age</th>"
        f"<th>actions</th></tr>{newest}</table>"
        "<p>Another copy (its name as <code>list --offsite</code> shows it): "
        + form(
            "/restore/plan",
            "restore…",
            csrf,
            hidden("from", "offsite"),
            "<input name=archive required aria-label='offsite copy name'> ",
            enhance=False,
        )
        + "</p><p>Disaster recovery: "
        + form(
            "/restore/plan",
            "restore every database from its newest copy…",
            csrf,
            hidden("from", "offsite"),
            hidden("latest", "1"),
            enhance=False,
        )
        + "</p>"
    )


def copy_cell(name: str, copies: Mapping[str, ArchiveOffsiteCopy]) -> str:
    copy = copies.get(name)
    if copy is None:
        return "<td>none</td>"
    cls = {"confirmed": "good", "pending": "plain"}.get(copy.state, "bad")
    why = {"mismatched": "an object of its name made from other bytes"}.get(copy.state)
    detail = f": {e(copy.detail or why)}" if copy.detail or why else ""
    obj = f' title="{e(copy.object)}"' if copy.object else ""
    return f"<td class={cls}{obj}>{e(copy.state)}{detail}</td>"


def _restore(obj: str, csrf: str) -> str:
    """A restore of the copy ``obj`` from offsite: its plan first (the dry run downloads it)."""
    fields = (hidden("archive", obj), hidden("from", "offsite"))
    return form("/restore/plan", "restore…", csrf, *fields, enhance=False)
