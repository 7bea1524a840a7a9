"""cli/plainyaml.py, the PyYAML-free reader of the fast commands: a value it reads is the one
PyYAML reads, on generated documents and on mutations of the shipped configurations; anything
outside its subset is left to PyYAML (and the fast commands then do not import it for a plain
file)."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backup_sidecar.cli.endpoints import control_socket, healthz_url
from backup_sidecar.cli.plainyaml import UNSURE, value
from backup_sidecar.settings.yamlfile import _UniqueKeyLoader

REPO = Path(__file__).resolve().parent.parent
TARGETS = (("metrics", "host"), ("metrics", "port"), ("control", "socket"), ("metrics", "enabled"))
SCALARS = [
    "9", "9464", "0", "007", "0009", "0x1F", "1_000", "1:30", "+1", "-1", "1.5", "1e3", ".5",
    "127.0.0.1", "0.0.0.0", "::", "::1", "'::'", '"fe80::1"', "localhost", "yes", "No", "on",  # noqa: S104
    "OFF", "true", "~", "null", "Null", "", "=", "<<", "2001-12-14", "2001-12-14 21:59:43.10 -5",
    "/run/x.sock", "/a:b", "http://h:1/x", "a b", "a #c", "a: b", "a:", "'it''s'", '"a\\tb"',
    "'a # b'", '"x" y', "*alias", "&anchor 1", "!!str 9", "!!int '9'", "|", ">", "%x", "@x",
    "`x`", "- x", "-x", "?x", "[a, b]", "[]", "{}", "{a: 1}", "{a: 1,}", "[a, [b, c]]",
    "{host: h, port: 1}", "{port: 9, port: 10}", "[a:b]", "{a:b}", "{'a': 1}", "'unclosed",
    '"unclosed', "[unclosed", "0 3 * * *", "x\ty", "\ufeffx", "é", "a\u2028b", ".inf", "0b101",
    ".NaN", "1,2", "a]b", "a{b", "#c", "2001-13-45", "1999-1-2 3:04:05", "1234-x", "a?b", "{a: b?}",
]  # fmt: skip
KEYS = [
    "metrics", "control", "host", "port", "socket", "x", "on", "<<", "'host'", "? host", "1",
    "enabled",
    "yes", "ON", "true", "null", "~", "0x1", "01", '"port"',
]  # fmt: skip
#: Flow mappings whose keys repeat, as written or as PyYAML reads them (`on`/`yes`, `1`/`0x1`).
DUPLICATED = [
    "{host: h, port: 1, port: 9}", "{port: 1, 'port': 9}", "{on: 1, yes: 2}", "{1: a, 0x1: b}",
    "{null: a, ~: b}", "{port: 1, host: h, \"port\": 9}", "{a: {b: 1, b: 2}}", "[{a: 1, a: 2}]",
]  # fmt: skip
INDENTS = ["", " ", "  ", "    "]


@functools.lru_cache(maxsize=4)
def _loaded(text: str) -> object:
    """The document as the validated loader reads it, once per text (each is asked for every
    target), or ``_REFUSED``."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except (yaml.YAMLError, RecursionError, ValueError):
        return _REFUSED


_REFUSED = object()


def _pyyaml(text: str, section: str, key: str) -> object:
    """What the validated loader reads (a str for anything it would not take: a duplicate key
    too, which plain PyYAML would read as the last one)."""
    data = _loaded(text)
    if data is _REFUSED:
        return "<unsure>"
    if data is None:
        return None
    if not isinstance(data, dict):
        return "<unsure>"
    part = data.get(section, {})
    if not isinstance(part, dict):
        return "<unsure>"
    return part.get(key)


def _agrees(text: str) -> int:
    """Assert that every value read without PyYAML is PyYAML's; how many were read."""
    read = 0
    for section, key in TARGETS:
        got = value(text, section, key)
        if got is UNSURE:
            continue
        expected = _pyyaml(text, section, key)
        assert (type(got), got) == (type(expected), expected), (text, section, key)
        read += 1
    return read


_line = st.tuples(
    st.sampled_from(INDENTS),
    st.sampled_from(["", "- ", "-"]),
    st.sampled_from(KEYS),
    st.sampled_from([":", ": ", ":  ", ""]),
    st.sampled_from(SCALARS),
    st.sampled_from(["", "  # note", " #", "#x", "  "]),
).map("".join)
_section = st.tuples(
    st.sampled_from(["metrics", "control", "x", "metrics", "control"]),
    st.sampled_from(
        [":", ": # c", ": {host: 1.2.3.4, port: 9}", ": [1]", ": x", ":  "]
        + [f": {flow}" for flow in DUPLICATED]
    ),
    st.lists(
        st.tuples(
            st.sampled_from(INDENTS[1:]),
            st.sampled_from([*KEYS[2:5], *KEYS[11:]]),
            st.sampled_from(SCALARS + DUPLICATED),
        ),
        max_size=4,
    ),
).map(lambda p: "\n".join([p[0] + p[1], *(f"{i}{k}: {v}" for i, k, v in p[2])]))


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(_section, _line), max_size=6), st.sampled_from(["\n", "\n\n", "\n# c\n"]))
def test_a_value_read_without_pyyaml_is_pyyamls(parts: list[str], sep: str) -> None:
    """On generated documents (tricky scalars, flow collections, odd indents, duplicate keys
    in block and flow mappings, keys PyYAML reads as one, comments), every value the plain
    reader returns equals the validated loader's, type included: never one from a file it
    refuses."""
    _agrees(sep.join(parts) + "\n")


@pytest.mark.parametrize("name", ["sidecar.yaml", "sidecar.compose.yaml"])
def test_the_shipped_configurations_are_read_without_pyyaml(name: str) -> None:
    """The documented and the compose configurations are in the subset: all three values are
    read without PyYAML, and agree with it."""
    text = (REPO / "config" / name).read_text()
    assert _agrees(text) == len(TARGETS)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_configurations_agree_or_defer(data: st.DataObject) -> None:
    """A shipped configuration with characters deleted, replaced or inserted (broken
    indentation, unclosed brackets and quotes, stray indicators): a value read is PyYAML's."""
    text = (REPO / "config" / "sidecar.compose.yaml").read_text()
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(text)))
        new = data.draw(st.sampled_from(["", *" \n:#-[]{}'\"&*!|>,?\t0"]))
        cut = data.draw(st.integers(0, 3))
        text = text[:at] + new + text[at + cut :]
    _agrees(text)


def test_healthcheck_does_not_import_pyyaml_for_a_plain_file(tmp_path: Path) -> None:
    """The fast commands read the endpoint of a plain configuration without importing PyYAML
    (a fifth of their start-up), and still import it for a file outside the subset."""
    code = (
        "import sys; from pathlib import Path; from backup_sidecar.cli.endpoints import "
        "healthz_url, control_socket; p = Path(sys.argv[1]); "
        "print(healthz_url(p, {}), control_socket(p, {}), 'yaml' in sys.modules)"
    )
    plain = tmp_path / "plain.yaml"
    plain.write_text((REPO / "config" / "sidecar.compose.yaml").read_text())
    anchored = tmp_path / "anchored.yaml"
    anchored.write_text("x: &a 1\nmetrics: {host: h, port: 9}\ncontrol: {socket: /s}\n")
    out = [
        subprocess.run(
            [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
        ).stdout.split()
        for path in (plain, anchored)
    ]
    sock = "/run/backup-sidecar/control.sock"
    assert out == [
        ["http://127.0.0.1:9464/healthz", sock, "False"],
        ["http://h:9/healthz", "/s", "True"],
    ]


@pytest.mark.parametrize(
    "text",
    [
        "metrics: {host: 127.0.0.1, port: 1, port: 19465}\ncontrol: {socket: /s}\n",
        "metrics:\n  port: 1\n  port: 19465\ncontrol: {socket: /s, socket: /t}\n",
        "x: &a 1\nmetrics: {host: h, port: 1, port: 9}\ncontrol: {socket: /s}\n",
        "x: {on: 1, yes: 2}\nmetrics: {host: h, port: 9}\ncontrol: {socket: /s}\n",
        "x: [{'a': 1, a: 2}]\nmetrics: {host: h, port: 9}\ncontrol: {socket: /s}\n",
    ],
)
def test_a_duplicate_key_defers_to_the_validated_load(tmp_path: Path, text: str) -> None:
    """A file with a key twice anywhere (block or flow, plain subset or not, as written or as
    PyYAML reads it), which `config check` refuses, gives the fast commands no endpoint: they
    load the validated configuration, which names the duplicate (PyYAML alone took the last)."""
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    assert (healthz_url(path, {}), control_socket(path, {})) == (None, None)
