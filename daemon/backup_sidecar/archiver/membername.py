"""Which names a database member can have: one rule for the writer, the readers and the config.

A member name is a database's file name (or a configured one). It must be one safe path
component that tar carries unchanged (a pax ``path`` record for non-ASCII or long names, which
GNU tar reads), that the reader can stage as a file, and that prints on one line. The backup,
the metadata parser and the tar reader all ask :func:`member_name_problem`, so a backup never
publishes a name that verify refuses.
"""

from __future__ import annotations

#: The longest member name in UTF-8 bytes: a file name may have 255, and the live database
#: needs room for SQLite's ``-journal`` and the restore's ``.<name>.restore-<pid>``.
MAX_MEMBER_BYTES = 200


def member_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a member of an archive, or None when it can."""
    if not name:
        return "is empty"
    if name in (".", ".."):
        return "is not a file name"
    if "/" in name:
        return "contains '/' (it must be one path component)"
    if "\\" in name:
        return "contains '\\' (a path separator on Windows, refused by the archive reader)"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "contains a control character (NUL, newline, ...)"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if size > MAX_MEMBER_BYTES:
        return f"is {size} bytes long; at most {MAX_MEMBER_BYTES} bytes (UTF-8) are allowed"
    return None
