"""`import-arrows` and `init --import` against hostile JSON files and a hostile environment.

Every malformed input is one line naming the JSON file (and, inside the document, the key path),
exit code 2, and the arrow database byte-identical; a database failure is exit 1 naming the
database and the file it was writing, with nothing of the batch imported (one transaction).
Good inputs are the real scraper files of ../shared/fixtures (synthetic ones where absent).
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import socket
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from backup_sidecar.appdata.arrows_import import (
    import_arrow_documents,
    import_arrows,
    import_sources,
)
from backup_sidecar.appdata.arrows_json import MAX_JSON_BYTES, decode_document
from backup_sidecar.appdata.arrows_parse import parse_document
from backup_sidecar.appdata.demo_data import SYNTHETIC_ARROWS
from backup_sidecar.appdata.import_rules import import_forced, import_skip_reason
from backup_sidecar.appdata.schema import create_empty_database
from backup_sidecar.errors import ArrowDataError, ConfigError, DatabaseError
from support.cli import Sidecar
from support.databases import count, dump
from support.fuzzing import FUZZ
from support.paths import FIXTURES

GOOD_FILES = sorted(FIXTURES.glob("*_update_*.json"))
#: The fuzzer's budget: fixed, reproducible (derandomized), no per-example deadline.
EXAMPLES = 300


def good_doc() -> dict[str, Any]:
    """A real scraper document (Victory Archery, 17 arrows), or a synthetic one without the
    fixtures."""
    victory = [f for f in GOOD_FILES if f.name.startswith("Victory")]
    if victory:
        return json.loads(victory[0].read_text())  # type: ignore[no-any-return]
    return copy.deepcopy(SYNTHETIC_ARROWS[0])


def arrow_count(path: Path) -> int:
    return count(path, "SELECT count(*) FROM arrows")


@pytest.fixture
def arrow_db(tmp_path: Path) -> Path:
    """A fresh arrow database holding one earlier import, so 'untouched' means something."""
    path = tmp_path / "arrow_database.db"
    create_empty_database(path, "arrow")
    import_arrow_documents(path, [("earlier", SYNTHETIC_ARROWS[1])])
    return path


def with_gpi(raw: str) -> Callable[[Path], str]:
    """The good document with its first gpi_weight replaced by ``raw`` JSON text."""

    def build(_: Path) -> str:
        doc = good_doc()
        doc["arrows"][0]["spine_specifications"][0]["gpi_weight"] = "@@"
        return json.dumps(doc).replace('"@@"', raw, 1)

    return build


def with_spine(raw: str) -> Callable[[Path], str]:
    def build(_: Path) -> str:
        doc = good_doc()
        doc["arrows"][0]["spine_specifications"][0]["spine"] = "@@"
        return json.dumps(doc).replace('"@@"', raw, 1)

    return build


GPI = "arrows[0].spine_specifications[0].gpi_weight"
SPINE = "arrows[0].spine_specifications[0].spine"

#: (id, file content builder, the key path named, a fragment of the reason)
HOSTILE_DOCUMENTS: list[tuple[str, Callable[[Path], str | bytes], str, str]] = [
    ("deep-top", lambda _: "[" * 100_000 + "]" * 100_000, "", "nested too deeply"),
    (
        "deep-inside",
        lambda _: '{"arrows": [' + "[" * 100_000 + "]" * 100_000 + "]}",
        "",
        "nested too deeply",
    ),
    ("nan-gpi", with_gpi("NaN"), GPI, "NaN is not a JSON number"),
    ("infinity-gpi", with_gpi("-Infinity"), GPI, "-Infinity is not a JSON number"),
    ("1e400-gpi", with_gpi("1e400"), GPI, "1e400 is out of range"),
    ("4301-digit-spine", with_spine("9" * 4301), SPINE, "(4301 digits) is out of range"),
    ("20-digit-spine", with_spine("9" * 20), SPINE, "out of range (64-bit integers)"),
    ("20-digit-gpi", with_gpi("-" + "9" * 20), GPI, "out of range (64-bit integers)"),
    ("1e300-spine", with_spine("1e300"), SPINE, "out of range (64-bit integers)"),
    ("superscript-spine", with_spine('"\u00b2"'), SPINE, "expected an integer spine"),
    (
        "lone-surrogate",
        lambda _: json.dumps(good_doc()).replace('"model_name": "', '"model_name": "\\ud800', 1),
        "arrows[0].model_name",
        "not valid Unicode: a lone surrogate \\ud800",
    ),
    (
        "bad-utf8",
        lambda _: (
            json.dumps(good_doc()).encode().replace(b"Victory", b"Vict\xffry", 1)
            if GOOD_FILES
            else b'{"arrows": ["\xff"]}'
        ),
        "",
        "is not valid UTF-8: byte",
    ),
    (
        "length-nan",
        with_gpi('1, "length_options": [28, NaN]'),
        f"{GPI[:-10]}length_options[1]",
        "NaN",
    ),
    (
        "too-large",
        lambda _: " " * (MAX_JSON_BYTES + 1) + json.dumps(good_doc()),
        "",
        "is larger than 16 MiB",
    ),
]


@pytest.mark.parametrize(
    ("build", "key_path", "reason"),
    [pytest.param(b, k, r, id=i) for i, b, k, r in HOSTILE_DOCUMENTS],
)
def test_hostile_document_is_one_line_naming_file_and_key(
    tmp_path: Path,
    arrow_db: Path,
    build: Callable[[Path], str | bytes],
    key_path: str,
    reason: str,
) -> None:
    """Each hostile document (deep nesting, NaN/Infinity/1e400, integers past 64 bits or past
    Python's 4,300-digit limit, a non-ASCII digit spine, a lone surrogate, invalid UTF-8, a file
    over the size bound) raises ArrowDataError, one line naming the file and key path, and
    leaves the database untouched. Before: RecursionError, ValueError, OverflowError,
    UnicodeEncodeError tracebacks, Infinity stored, a 16 MiB+ file read whole."""
    bad = tmp_path / "Hostile_update_20250801.json"
    content = build(tmp_path)
    bad.write_bytes(
        content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content
    )
    before = dump(arrow_db)
    with pytest.raises(ArrowDataError) as info:
        import_arrows(arrow_db, [bad])
    message = str(info.value)
    assert "\n" not in message and len(message) < 300, message
    where = f"{bad}: {key_path}: " if key_path else f"{bad}: "
    assert message.startswith(where), message
    assert reason in message, message
    assert info.value.key_path == key_path
    assert dump(arrow_db) == before


def test_numbers_in_ignored_keys_do_not_stop_an_import(tmp_path: Path, arrow_db: Path) -> None:
    """A 5,000-digit number or NaN under a key the import ignores (the scraper's own
    `total_arrows`) is never stored, so it does not refuse the file (before: the int digit
    limit's ValueError escaped json.loads for the whole file)."""
    doc = good_doc()
    doc["total_arrows"] = "@@"
    doc["arrows"][0]["scraper_score"] = "##"
    text = json.dumps(doc).replace('"@@"', "9" * 5000).replace('"##"', "NaN")
    path = tmp_path / "Odd_update_20250801.json"
    path.write_text(text)
    report = import_arrows(arrow_db, [path])
    assert report.arrows.inserted == len({a["model_name"] for a in doc["arrows"]})


def test_python_nan_from_a_caller_is_refused_with_its_key_path(arrow_db: Path) -> None:
    """An already-decoded document (the demo's path) with a float NaN gpi_weight is refused by
    the parser naming the document and the key; before, SQLite's NOT NULL failure came back as
    a DatabaseError naming the JSON document as the database path."""
    doc = good_doc()
    doc["arrows"][0]["spine_specifications"][0]["gpi_weight"] = math.nan
    before = dump(arrow_db)
    with pytest.raises(
        ArrowDataError, match=rf"^scraper\.json: {re.escape(GPI)}: nan is not a finite"
    ):
        import_arrow_documents(arrow_db, [("scraper.json", doc)])
    doc["arrows"][0]["spine_specifications"][0]["gpi_weight"] = 2**70
    with pytest.raises(ArrowDataError, match=rf"^scraper\.json: {re.escape(GPI)}: .* out of range"):
        import_arrow_documents(arrow_db, [("scraper.json", doc)])
    assert dump(arrow_db) == before


def test_a_database_failure_names_the_database_and_imports_nothing(
    tmp_path: Path, arrow_db: Path
) -> None:
    """A real SQLite failure while writing the second file (a trigger that aborts) rolls back
    the whole batch: the first file is not half-imported, and the DatabaseError names the
    database's path and the JSON file it was writing. Before: each file had its own transaction
    (the first stayed committed) and the error named the JSON file as the database."""
    first, second = tmp_path / "First_update.json", tmp_path / "Second_update.json"
    doc = good_doc()
    first.write_text(json.dumps(doc))
    other = copy.deepcopy(SYNTHETIC_ARROWS[3])  # Carbon Express: not in the first file
    second.write_text(json.dumps(other))
    conn = sqlite3.connect(arrow_db)
    conn.execute(
        "CREATE TRIGGER refuse AFTER INSERT ON arrows WHEN NEW.manufacturer = "
        f"'{other['manufacturer']}' BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END"
    )
    conn.commit()
    conn.close()
    before = dump(arrow_db)
    with pytest.raises(DatabaseError) as info:
        import_arrows(arrow_db, [first, second])
    message = str(info.value)
    assert message.startswith(f"database 'arrow' ({arrow_db}): importing {second} failed")
    assert "nothing imported (rolled back)" in message and "refused by a trigger" in message
    assert info.value.path == arrow_db
    assert dump(arrow_db) == before


# --- files that are not files ------------------------------------------------------------------


def _planted(tmp_path: Path, kind: str) -> tuple[Path, str]:
    """A path given as FILE that is not a regular JSON file, and the reason expected."""
    path = tmp_path / f"{kind}.json"
    if kind == "directory":
        path.mkdir()
        return path, "is a directory, not a regular JSON file"
    if kind == "link-to-directory":
        (tmp_path / "d").mkdir()
        path.symlink_to(tmp_path / "d")
        return path, f"is a directory (a symbolic link to '{tmp_path / 'd'}')"
    if kind == "dangling-link":
        path.symlink_to(tmp_path / "gone.json")
        return path, f"cannot open: No such file or directory (a symbolic link to '{tmp_path}"
    if kind == "link-loop":
        path.symlink_to(path)
        return path, "cannot open: Too many levels of symbolic links"
    if kind == "fifo":
        os.mkfifo(path)
        return path, "is a FIFO, not a regular JSON file"
    if kind == "socket":
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(path))
        return path, "is a socket, not a regular JSON file"
    if kind == "device":
        path.symlink_to("/dev/null")
        return path, "is a character device (a symbolic link to '/dev/null')"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    ["directory", "link-to-directory", "dangling-link", "link-loop", "fifo", "device", "socket"],
)
def test_a_path_that_is_not_a_json_file_is_refused_by_the_cli(
    tmp_path: Path, arrow_db: Path, sidecar_env: Callable[..., Sidecar], kind: str
) -> None:
    """`import-arrows PATH` where PATH is a directory, a link to one, a dangling link, a link
    loop, a FIFO (it would block for a writer: before, the command hung), a device or a socket:
    exit 2, one stderr line naming the path and what it is, the database untouched."""
    path, reason = _planted(tmp_path, kind)
    before = dump(arrow_db)
    done = sidecar_env(arrow=arrow_db).run("import-arrows", str(path), timeout=60)
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"backup-sidecar: error: {path}: {reason}"), lines[0]
    assert dump(arrow_db) == before


def test_a_file_name_with_a_newline_stays_one_line(tmp_path: Path, arrow_db: Path) -> None:
    """A bad file whose name holds a newline is named quoted (repr), so the error stays one
    line (before: the name was printed raw, splitting the line)."""
    bad = tmp_path / "two\nlines.json"
    bad.write_text(with_gpi('"heavy"')(tmp_path))
    with pytest.raises(ArrowDataError) as info:
        import_arrows(arrow_db, [bad])
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(f"{str(bad)!r}: {GPI}: expected a number"), str(info.value)


def test_a_link_to_a_good_file_is_followed(tmp_path: Path, arrow_db: Path) -> None:
    """A symbolic link to a regular JSON file imports it (documented: the operator names the
    file; a Kubernetes ConfigMap's files are links)."""
    real = tmp_path / "real.json"
    real.write_text(json.dumps(good_doc()))
    link = tmp_path / "latest.json"
    link.symlink_to(real)
    assert import_arrows(arrow_db, [link]).arrows.inserted > 0


def test_cli_exit_codes_for_hostile_json(
    tmp_path: Path, arrow_db: Path, sidecar_env: Callable[..., Sidecar]
) -> None:
    """Through the real CLI: a deeply nested file (before: a RecursionError traceback, exit 1)
    and a NaN gpi_weight are exit 2 with one stderr line naming the file; nothing is written."""
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    nan = tmp_path / "nan.json"
    nan.write_text(with_gpi("NaN")(tmp_path))
    before = dump(arrow_db)
    sidecar = sidecar_env(arrow=arrow_db)
    for path, fragment in ((deep, "nested too deeply"), (nan, f"{GPI}: NaN")):
        done = sidecar.run("import-arrows", str(path))
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.startswith(f"backup-sidecar: error: {path}: "), done.stderr
        assert fragment in done.stderr
    assert dump(arrow_db) == before


def test_init_refuses_a_bad_file_before_creating_anything(
    tmp_path: Path, sidecar_env: Callable[..., Sidecar]
) -> None:
    """`init --import good.json bad.json` reads every file before it creates a directory or a
    database: exit 2 naming the bad file, and nothing exists afterwards (before: the
    directories and both databases were created, then the import failed)."""
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(good_doc()))
    bad.write_text(with_gpi("Infinity")(tmp_path))
    arrow = tmp_path / "arrow_data" / "arrow_database.db"
    sidecar = sidecar_env(arrow=arrow, user=tmp_path / "user_data" / "user_data.db")
    done = sidecar.run("init", "--import", str(good), "--import", str(bad))
    assert done.returncode == 2, done.stderr
    assert f"{bad}: {GPI}: Infinity is not a JSON number" in done.stderr
    assert not (tmp_path / "arrow_data").exists()
    assert not (tmp_path / "user_data").exists()
    assert not any(sidecar.backup_dir.iterdir())


# --- FORCE_DATABASE_IMPORT ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "forced"),
    [
        ("true", True),
        ("TRUE", True),
        (" True ", True),
        ("1", True),
        ("yes", True),
        ("on", True),
        ("false", False),
        ("0", False),
        ("no", False),
        ("Off", False),
        ("", False),
        (None, False),
    ],
)
def test_force_flag_spellings(value: str | None, forced: bool) -> None:
    """The documented spellings: true/1/yes/on force, false/0/no/off/blank/unset do not."""
    environ = {"FLASK_ENV": "production"} | (
        {} if value is None else {"FORCE_DATABASE_IMPORT": value}
    )
    assert import_forced(environ) is forced
    assert bool(import_skip_reason(environ)) is not forced


@pytest.mark.parametrize("value", ["ture", "y", "2", "enable", "true!"])
def test_an_unrecognised_force_flag_is_refused(value: str) -> None:
    """`FORCE_DATABASE_IMPORT=ture` is a ConfigError naming the variable and the value, in
    production or not (before: it silently meant false)."""
    for env in ({"FLASK_ENV": "production"}, {}):
        with pytest.raises(ConfigError) as info:
            import_skip_reason({**env, "FORCE_DATABASE_IMPORT": value})
        assert str(info.value).startswith(f"environment FORCE_DATABASE_IMPORT: {value!r} is")


@pytest.mark.parametrize("command", ["import-arrows", "init"])
def test_cli_refuses_a_misspelt_force_flag(
    tmp_path: Path, arrow_db: Path, sidecar_env: Callable[..., Sidecar], command: str
) -> None:
    """`import-arrows` and `init --import` with FORCE_DATABASE_IMPORT=ture in production exit 2
    with one line naming the variable, import nothing and create nothing (before: exit 0, the
    typo read as false); `init` without --import does not consult the flag and succeeds."""
    doc = tmp_path / "scraper.json"
    doc.write_text(json.dumps(good_doc()))
    sidecar = sidecar_env(arrow=arrow_db, FLASK_ENV="production", FORCE_DATABASE_IMPORT="ture")
    before = dump(arrow_db)
    args = (
        ["import-arrows", str(doc)]
        if command == "import-arrows"
        else ["init", "--import", str(doc)]
    )
    done = sidecar.run(*args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "backup-sidecar: error: environment FORCE_DATABASE_IMPORT: 'ture' is neither true nor "
        "false (true/1/yes/on or false/0/no/off, any case)"
    ]
    assert dump(arrow_db) == before
    assert not any(sidecar.backup_dir.iterdir())
    if command == "init":
        assert sidecar.run("init").returncode == 0


@pytest.mark.parametrize("value", ["true", "yes"])
def test_import_arrows_logs_a_forced_production_import(
    tmp_path: Path, sidecar_env: Callable[..., Sidecar], value: str
) -> None:
    """`import-arrows` in production with the force flag imports and logs `import_forced`
    once, never `import_skipped` (before: a forced import-arrows logged nothing)."""
    arrow = tmp_path / "arrow_database.db"
    create_empty_database(arrow, "arrow")
    doc = tmp_path / "scraper.json"
    doc.write_text(json.dumps(good_doc()))
    sidecar = sidecar_env(arrow=arrow, APP_ENV="production", FORCE_DATABASE_IMPORT=value)
    done = sidecar.run("import-arrows", str(doc))
    assert done.returncode == 0, done.stderr
    events = [
        json.loads(line)["event"] for line in done.stderr.splitlines() if line.startswith("{")
    ]
    assert events.count("import_forced") == 1, events
    assert f"FORCE_DATABASE_IMPORT={value}: importing 1 arrow file(s)" in done.stderr
    assert "import_skipped" not in events
    assert arrow_count(arrow) == len({a["model_name"] for a in good_doc()["arrows"]})


# --- fuzz ---------------------------------------------------------------------------------------

#: Raw JSON tokens a value may be replaced with textually (json.dumps cannot write them).
RAW_TOKENS = ["NaN", "-Infinity", "1e400", "-1e999", "9" * 4301, "9" * 20, "[" * 5000, "1.5e-400"]
KEYS = [
    "manufacturer", "model_name", "material", "description", "spine_specifications", "spine",
    "gpi_weight", "outer_diameter", "length_options", "notes", "straightness_tolerance",
    "image_url", "arrows", "scraped_at", "x",
]  # fmt: skip

STORED_SPINE_KEYS = ["spine", "gpi_weight", "outer_diameter", "length_options", "notes"]
STORED_ARROW_KEYS = ["model_name", "material", "description", "straightness_tolerance"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=2),
    st.sampled_from([f"@raw{i}@" for i in range(len(RAW_TOKENS))]),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)
    ),
    max_leaves=8,
)


def _containers(node: Any) -> list[Any]:
    found = [node] if isinstance(node, dict | list) else []
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    for child in children:
        found.extend(_containers(child))
    return found


@st.composite
def hostile_documents(draw: st.DrawFn, base: dict[str, Any]) -> bytes:
    """The good document with a few values replaced, keys added or removed, then (sometimes)
    raw tokens spliced in and its bytes cut, flipped or wrapped."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 4))):
        targets = _containers(doc)
        if not targets:
            break
        node = draw(st.sampled_from(targets))
        if isinstance(node, dict):
            key = draw(st.sampled_from(KEYS + list(node)))
            if draw(st.booleans()) or key not in node:
                node[key] = draw(values)
            else:
                del node[key]
        elif node:
            node[draw(st.integers(0, len(node) - 1))] = draw(values)
        else:
            node.append(draw(values))
    stored = [n for n in _containers(doc) if isinstance(n, dict) and "gpi_weight" in n]
    stored += [n for n in _containers(doc) if isinstance(n, dict) and "model_name" in n]
    hostile = draw(st.booleans()) if stored else False
    if hostile:  # a hostile value where the import stores one
        node = draw(st.sampled_from(stored))
        keys = STORED_SPINE_KEYS if "gpi_weight" in node else STORED_ARROW_KEYS
        raw = st.sampled_from([f"@raw{i}@" for i in range(len(RAW_TOKENS))])
        node[draw(st.sampled_from(keys))] = draw(raw | scalars)
    text = json.dumps(doc, allow_nan=True)
    for i, token in enumerate(RAW_TOKENS):
        text = text.replace(f'"@raw{i}@"', token)
    return draw(mangled(text.encode("utf-8", "surrogatepass")))


@st.composite
def mangled(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` as is (mostly), cut, with a byte flipped, wrapped 1 to 100,000 deep, or BOM'd."""
    how = draw(st.sampled_from(["as-is", "as-is", "as-is", "cut", "flip", "wrap", "bom"]))
    if how == "cut":
        data = data[: draw(st.integers(0, len(data)))]
    elif how == "flip":
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
    elif how == "wrap":
        depth = draw(st.sampled_from([1, 10, 100_000]))
        data = b'{"arrows": ' + b"[" * depth + data + b"]" * depth + b"}"
    elif how == "bom":
        data = b"\xef\xbb\xbf" + data
    return data


def test_fuzzed_documents_are_imported_or_refused_with_arrow_data_error(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Hypothesis-built hostile documents (values of every type at every level, NaN, Infinity,
    huge numbers, lone surrogates, cut, flipped, deeply wrapped bytes): decoding and parsing
    raise nothing but ArrowDataError (one line, naming the file), and a document the parser
    accepts imports without an exception."""
    db = tmp_path_factory.mktemp("fuzz") / "arrow_database.db"
    create_empty_database(db, "arrow")
    base = good_doc()
    outcomes = {"accepted": 0, "refused": 0}
    reasons: list[str] = []

    # One document of each refusal family, so that the family check below holds whatever the
    # generator draws (its draws shifted with the hypothesis tests that ran before it).
    marked = copy.deepcopy(base)
    marked["arrows"][0]["spine_specifications"][0]["spine"] = 123456789
    text = json.dumps(marked)

    @settings(FUZZ, max_examples=EXAMPLES)
    @given(hostile_documents(base))
    @example(b"{")
    @example(b"[" * 100_000)
    @example(b'{"arrows": 5}')
    @example(text.replace("123456789", "1e400").encode())
    @example(text.replace("123456789", "NaN").encode())
    def check(data: bytes) -> None:
        try:
            source = parse_document(decode_document(data, source="fuzz.json"), source="fuzz.json")
        except ArrowDataError as exc:
            assert "\n" not in str(exc) and len(str(exc)) < 400, str(exc)
            assert str(exc).startswith("fuzz.json: "), str(exc)
            outcomes["refused"] += 1
            reasons.append(exc.reason)
            return
        import_sources(db, [source])
        outcomes["accepted"] += 1

    check()
    assert outcomes["accepted"] > EXAMPLES // 20, outcomes
    assert outcomes["refused"] > EXAMPLES // 4, outcomes
    families = [
        "invalid JSON",
        "nested too deeply",
        "expected",
        "out of range",
        "not a JSON number",
    ]
    for family in families:
        assert any(family in r for r in reasons), (family, sorted(set(reasons))[:40])
