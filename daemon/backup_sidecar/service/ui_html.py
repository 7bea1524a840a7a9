"""The web page's HTML pieces: escaping, sizes and ages for people, hidden fields and forms
(htmx-enhanced: the answer replaces the page's ``<main>``; without JavaScript a plain POST)."""

from __future__ import annotations

from html import escape


def e(value: object) -> str:
    return escape(str(value), quote=True)


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover


def human_age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, span in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= span:
            return f"{seconds / span:.1f} {unit}"
    return f"{seconds:.0f} s"


def hidden(name: str, value: str) -> str:
    return f'<input type=hidden name="{e(name)}" value="{e(value)}">'


def form(action: str, label: str, csrf: str, *fields: str, enhance: bool = True) -> str:
    hx = ' hx-post="{0}" hx-target="#main" hx-select="#main" hx-swap="outerHTML"'
    return (
        f'<form method=post action="{e(action)}"{hx.format(e(action)) if enhance else ""}>'
        f"{hidden('csrf', csrf)}{''.join(fields)}<button>{e(label)}</button></form>"
    )
