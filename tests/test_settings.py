"""The configuration edge: YAML + injected environment -> Settings, or one clear ConfigError."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from backup_sidecar.errors import ConfigError, UsageError
from backup_sidecar.settings import (
    PolicyConfig,
    Settings,
    load_configuration,
    load_settings,
    parse_duration,
    resolve_paths,
)
from backup_sidecar.settings.retention import RULE_KEYS

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "sidecar.yaml"

WriteConfig = Callable[[str], Path]


@pytest.fixture
def write_config(tmp_path: Path) -> WriteConfig:
    """Write a YAML snippet (dedented) to a file and return its path."""

    def write(text: str) -> Path:
        path = tmp_path / "sidecar.yaml"
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


def exists_only(*present: str) -> Callable[[Path], bool]:
    """A fake `Path.exists` that knows only the given paths."""
    return lambda path: str(path) in present


# --- defaults and the example -------------------------------------------------------------


def test_defaults_without_file_or_environment() -> None:
    """No file, no environment: the DESIGN's defaults (arrow + user, daily/weekly/pre_restore)."""
    settings = load_settings(None, environ={})
    assert list(settings.databases) == ["arrow", "user"]
    assert settings.policies["daily"] == PolicyConfig(schedule="0 3 * * *", keep=7)
    assert settings.policies["weekly"].schedule == "30 3 * * 0"
    assert settings.policies["pre_restore"].trigger is None
    assert settings.health.interval == timedelta(seconds=60)
    assert settings.health.max_backup_age == {
        "daily": timedelta(hours=26),
        "weekly": timedelta(days=8),
    }
    assert (settings.metrics.port, settings.control.mode_bits) == (9464, 0o660)
    assert settings.lock_timeout == timedelta(seconds=30)
    assert settings.timezone == "UTC"


def test_example_file_loads() -> None:
    """config/sidecar.yaml, the documented example, is valid as shipped."""
    settings = load_settings(EXAMPLE, environ={})
    assert settings.backup_dir == Path("/app/backups")
    assert settings.databases["user"].path == Path("/app/user_data/user_data.db")
    assert settings.policy_databases("weekly") == ["arrow", "user"]


def test_example_drill_policy_is_accepted(write_config: WriteConfig) -> None:
    """Uncommenting the example's drill policy gives a scheduled `drill` policy that keeps 0."""
    text = EXAMPLE.read_text(encoding="utf-8").replace("  # drill:", "  drill:")
    settings = load_settings(write_config(text), environ={})
    assert settings.policies["drill"] == PolicyConfig(schedule="0 5 * * 1", keep=0)
    assert "drill" in settings.scheduled_policies()


def test_empty_file_means_defaults(write_config: WriteConfig) -> None:
    """An empty (or comment-only) file is the defaults, not an error."""
    assert load_settings(write_config("# nothing\n"), environ={}) == load_settings(None, environ={})


def test_policies_without_pre_restore_get_it(write_config: WriteConfig) -> None:
    """A file listing its own policies still gets `pre_restore`, and the default max ages that
    name missing policies are dropped rather than refused."""
    path = write_config("""
        policies:
          hourly: {every: 1h, keep: 24}
    """)
    settings = load_settings(path, environ={})
    assert set(settings.policies) == {"hourly", "pre_restore"}
    assert settings.health.max_backup_age == {}
    assert settings.scheduled_policies() == {"hourly": timedelta(hours=1)}


def test_null_database_entry_means_defaults(write_config: WriteConfig) -> None:
    """`orders:` with nothing after it declares a database with default paths."""
    settings = load_settings(write_config("databases:\n  orders:\n"), environ={})
    assert settings.databases["orders"].path is None


def test_settings_are_frozen() -> None:
    """Settings and nested models cannot be changed after load (reload builds new ones)."""
    settings = load_settings(None, environ={})
    with pytest.raises(ValidationError):
        settings.timezone = "Europe/Berlin"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        settings.policies["daily"].keep = 1  # type: ignore[misc]


def test_policy_databases() -> None:
    """A policy without `databases` covers all; an unknown policy is a usage error."""
    settings = load_settings(None, environ={"SIDECAR_POLICIES__WEEKLY__DATABASES": '["user"]'})
    assert settings.policy_databases("daily") == ["arrow", "user"]
    assert settings.policy_databases("weekly") == ["user"]
    with pytest.raises(UsageError, match="unknown policy 'nope'"):
        settings.policy_databases("nope")


# --- refusals -----------------------------------------------------------------------------

REFUSED = [
    ("backp_dir: /x", "backp_dir", "unknown key"),
    ("policies: {daily: {schedule: '0 3 * * *', kepe: 7}}", "policies.daily.kepe", "unknown key"),
    ("databases: {arrow: {pth: /x}}", "databases.arrow.pth", "unknown key"),
    ("health: {intervall: 5}", "health.intervall", "unknown key"),
    ("metrics: {prot: 1}", "metrics.prot", "unknown key"),
    ("control: {sokcet: /x}", "control.sokcet", "unknown key"),
    ("policies: {daily: {schedule: '0 3 * * *', keep: -1}}", "policies.daily.keep", "must be >= 0"),
    ("policies: {daily: {keep: 1.5}}", "policies.daily.keep", "integer"),
    ("policies: {daily: {schedule: '0 3 * *', keep: 1}}", "policies.daily.schedule", "5 fields"),
    ("policies: {daily: {schedule: '0 25 * * *', keep: 1}}", "policies.daily.schedule", "hour"),
    ("policies: {d: {schedule: '0 0 30 2 *', keep: 1}}", "policies.d.schedule", "never fires"),
    ("policies: {d: {schedule: '0 3 * * *', every: 1h, keep: 1}}", "policies.d", "not both"),
    ("policies: {d: {every: 500ms, keep: 1}}", "policies.d.every", "at least 1s"),
    ("policies: {d: {every: soon, keep: 1}}", "policies.d.every", "invalid duration"),
    ("policies: {d: {keep: 1, databases: [arrow, nope]}}", "policies.d.databases", "'nope'"),
    ("policies: {pre_restore: {every: 1h, keep: 1}}", "policies.pre_restore", "never scheduled"),
    ("policies: {Daily: {keep: 1}}", "policies.Daily", "invalid name"),
    ("databases: {Arrow: {}}", "databases.Arrow", "invalid name"),
    ("databases: {a-b: {}}", "databases.a-b", "invalid name"),
    ("health: {max_backup_age: {hourly: 2h}}", "health.max_backup_age.hourly", "not a policy"),
    ("health: {interval: 0}", "health.interval", "greater than 0"),
    ("timezone: Mars/Olympus", "timezone", "unknown time zone"),
    (f"timezone: {'a' * 300}", "timezone", "unknown time zone"),
    ("compression_level: 4", "compression_level", "must be <= 3"),
    ("cpu_threads: 3", "cpu_threads", "must be auto, 1 or 2"),
    ("cpu_threads: true", "cpu_threads", "must be auto, 1 or 2"),
    ("metrics: {port: 70000}", "metrics.port", "must be <= 65535"),
    ("control: {mode: 0660}", "control.mode", "quoted octal"),
    ("control: {mode: '0999'}", "control.mode", "invalid mode"),
    ("grace_period: -5", "grace_period", "must be >= 0"),
    ("1: 2", "1", "unknown key"),
    ("policies: {daily: {keep: true}}", "policies.daily.keep", "not true/false"),
    ("metrics: {port: yes}", "metrics.port", "not true/false"),
    ("control: {socket: ''}", "control.socket", "must not be empty"),
    ("databases: {arrow: {path: ' '}}", "databases.arrow.path", "must not be empty"),
    ("lock_timeout: .inf", "lock_timeout", "out of range"),
    ("policies: {d: {every: 99999999999d, keep: 1}}", "policies.d.every", "out of range"),
    ("policies: {d: {every: 2000000d, keep: 1}}", "policies.d.every", "at most 3650d"),
    ("policies: {d: {every: P4000D, keep: 1}}", "policies.d.every", "at most 3650d"),
    ("health: {interval: 1ms}", "health.interval", "at least 1s"),
    ("health: {interval: 0.5}", "health.interval", "at least 1s"),
    ("health: {max_backup_age: {daily: 4000d}}", "health.max_backup_age.daily", "at most 3650d"),
    ("health: {recheck_unchanged: 4000d}", "health.recheck_unchanged", "at most 3650d"),
    ("grace_period: 4000d", "grace_period", "at most 3650d"),
    ("lock_timeout: 30d", "lock_timeout", "at most 1d"),
]


@pytest.mark.parametrize(("text", "key_path", "reason"), REFUSED)
def test_invalid_values_are_refused_naming_file_key_and_reason(
    write_config: WriteConfig, text: str, key_path: str, reason: str
) -> None:
    """Each invalid setting gives one ConfigError line: the file, the dotted key path, why."""
    path = write_config(text + "\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    error = caught.value
    assert (error.source, error.key_path) == (str(path), key_path)
    assert reason in error.reason
    assert str(error).startswith(f"{path}: {key_path}: ")
    assert "\n" not in str(error)


def test_duplicate_keys_are_refused_with_lines(write_config: WriteConfig) -> None:
    """Two policies with the same name are an error (plain YAML would keep the last silently)."""
    path = write_config("""
        policies:
          daily: {schedule: "0 3 * * *", keep: 7}
          weekly: {schedule: "30 3 * * 0", keep: 4}
          daily: {schedule: "0 4 * * *", keep: 1}
    """)
    with pytest.raises(
        ConfigError, match=r"line 5, column 3: duplicate key 'daily' \(first at line 3\)"
    ):
        load_settings(path, environ={})


def test_yaml_merge_keys_are_not_duplicates(write_config: WriteConfig) -> None:
    """A `<<` merge that an explicit key overrides is legitimate YAML, not a duplicate key."""
    path = write_config("""
        policies:
          daily: &base {schedule: "0 3 * * *", keep: 7}
          other: {<<: *base, keep: 3}
    """)
    other = load_settings(path, environ={}).policies["other"]
    assert other == PolicyConfig(schedule="0 3 * * *", keep=3)


def test_unreadable_characters_give_one_line(write_config: WriteConfig) -> None:
    """PyYAML's multi-line reader errors (control characters) are folded into one line."""
    with pytest.raises(ConfigError, match="unacceptable character") as caught:
        load_settings(write_config("timezone: 'a\x00b'\n"), environ={})
    assert "\n" not in str(caught.value)


def test_yaml_syntax_error_gives_line_and_column(write_config: WriteConfig) -> None:
    """A YAML syntax error names the file, the line and the column, on one line."""
    path = write_config("policies:\n  daily: {keep: 7\nhealth: {}\n")
    with pytest.raises(ConfigError, match=rf"^{path}: line \d+, column \d+: ") as caught:
        load_settings(path, environ={})
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", "42\n"])
def test_top_level_must_be_a_mapping(write_config: WriteConfig, text: str) -> None:
    """A file whose top level is not a mapping is refused, saying what it was."""
    with pytest.raises(ConfigError, match="expected a mapping of settings"):
        load_settings(write_config(text), environ={})


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A config path that does not exist is a ConfigError naming it, not a traceback."""
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError, match=rf"^{path}: cannot read: No such file"):
        load_settings(path, environ={})


# --- durations ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("1h", timedelta(hours=1)),
        ("1d", timedelta(days=1)),
        ("8d", timedelta(days=8)),
        ("26h", timedelta(hours=26)),
        ("1h30m", timedelta(minutes=90)),
        ("1.5s", timedelta(seconds=1.5)),
        ("90", timedelta(seconds=90)),
        (90, timedelta(seconds=90)),
        (2.5, timedelta(seconds=2.5)),
    ],
)
def test_durations(text: str | int, expected: timedelta) -> None:
    """Durations accept unit strings and plain numbers of seconds."""
    assert parse_duration(text) == expected


def test_iso_durations_pass_through_to_pydantic() -> None:
    """ISO 8601 durations are left to pydantic's own timedelta parsing."""
    assert load_settings(None, environ={"SIDECAR_LOCK_TIMEOUT": "PT45S"}).lock_timeout == timedelta(
        seconds=45
    )


@given(st.integers(min_value=0, max_value=10**7), st.sampled_from(["s", "m", "h", "d"]))
def test_duration_units_scale(count: int, unit: str) -> None:
    """Any whole number with a unit is that many seconds, minutes, hours or days."""
    scale = {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    assert parse_duration(f"{count}{unit}") == timedelta(seconds=count * scale)


def test_booleans_are_not_durations() -> None:
    """`interval: yes` is a mistake, not one second."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(True)


# --- environment --------------------------------------------------------------------------


def test_environment_overrides_nested_keys_and_keeps_the_rest() -> None:
    """`SIDECAR_` + `__` nesting overrides one key; the rest of the policy stays as it was."""
    settings = load_settings(
        None,
        environ={
            "SIDECAR_HEALTH__INTERVAL": "30s",
            "SIDECAR_POLICIES__DAILY__KEEP": "3",
            "SIDECAR_POLICIES__HOURLY__EVERY": "1h",
            "SIDECAR_POLICIES__HOURLY__KEEP": "24",
            "SIDECAR_TIMEZONE": "Europe/Berlin",
        },
    )
    assert settings.health.interval == timedelta(seconds=30)
    assert settings.policies["daily"] == PolicyConfig(schedule="0 3 * * *", keep=3)
    assert settings.policies["hourly"].every == timedelta(hours=1)
    assert settings.tzinfo.key == "Europe/Berlin"


def test_environment_overrides_the_file(write_config: WriteConfig) -> None:
    """An environment value wins over the same key in the file."""
    path = write_config(
        "metrics: {port: 9000}\npolicies: {daily: {schedule: '0 1 * * *', keep: 2}}\n"
    )
    settings = load_settings(path, environ={"SIDECAR_METRICS__PORT": "9100"})
    assert settings.metrics.port == 9100
    assert settings.policies["daily"].keep == 2


def test_environment_errors_name_the_variable() -> None:
    """A bad environment value is reported against its variable, with the key path."""
    with pytest.raises(ConfigError) as caught:
        load_settings(None, environ={"SIDECAR_POLICIES__DAILY__KEEP": "-2"})
    assert str(caught.value) == (
        "environment SIDECAR_POLICIES__DAILY__KEEP: policies.daily.keep: must be >= 0"
    )


def test_environment_json_errors_are_config_errors() -> None:
    """A complex value that is not JSON is a ConfigError, not a pydantic-settings traceback."""
    with pytest.raises(ConfigError, match="SIDECAR_POLICIES: policies: invalid JSON"):
        load_settings(None, environ={"SIDECAR_POLICIES": "daily"})


def test_process_environment_is_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the injected mapping counts; os.environ is left to the CLI edge."""
    monkeypatch.setenv("SIDECAR_METRICS__PORT", "1")
    monkeypatch.setenv("SIDECAR_TIMEZONE", "not/a-zone")
    settings = load_settings(None, environ={})
    assert settings.metrics.port == 9464
    assert Settings().metrics.port == 9464


def test_cli_variables_are_not_settings() -> None:
    """SIDECAR_CONFIG and SIDECAR_LOG_FORMAT belong to the CLI; they are not refused as settings."""
    environ = {"SIDECAR_CONFIG": "/nowhere", "SIDECAR_LOG_FORMAT": "json"}
    assert load_settings(None, environ=environ).timezone == "UTC"


# --- paths --------------------------------------------------------------------------------


def test_paths_fall_back_to_local_directories(tmp_path: Path) -> None:
    """Nothing configured, no /app: ./databases/<file> and ./backups under cwd."""
    paths = resolve_paths(
        load_settings(None, environ={}), environ={}, cwd=tmp_path, exists=exists_only()
    )
    assert paths.backup_dir == tmp_path / "backups"
    assert [(d.name, d.path, d.member) for d in paths.databases] == [
        ("arrow", tmp_path / "databases" / "arrow_database.db", "arrow_database.db"),
        ("user", tmp_path / "databases" / "user_data.db", "user_data.db"),
    ]
    assert paths.sources == {
        "databases.arrow": "local fallback",
        "databases.user": "local fallback",
        "backup_dir": "local fallback",
    }


def test_docker_volume_paths_when_their_directories_exist(tmp_path: Path) -> None:
    """With /app and a volume directory present, the Docker paths win over the local fallback."""
    paths = resolve_paths(
        load_settings(None, environ={}),
        environ={},
        cwd=tmp_path,
        exists=exists_only("/app", "/app/arrow_data"),
    )
    assert paths.backup_dir == Path("/app/backups")
    assert paths.database("arrow").path == Path("/app/arrow_data/arrow_database.db")
    assert paths.database("user").path == tmp_path / "databases" / "user_data.db"
    assert paths.sources["databases.arrow"] == "docker volume /app/arrow_data"


def test_yaml_beats_docker_and_environment_beats_yaml(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    """Order: <NAME>_DATABASE_PATH / BACKUP_DIR, then YAML, then Docker, then local."""
    path = write_config("""
        backup_dir: /srv/backups
        databases:
          arrow: {path: /srv/arrow.db}
          user: {path: rel/user.db}
    """)
    settings = load_settings(path, environ={})
    everything = exists_only("/app", "/app/arrow_data", "/app/user_data")
    paths = resolve_paths(settings, environ={}, cwd=tmp_path, exists=everything)
    assert paths.backup_dir == Path("/srv/backups")
    assert paths.database("arrow").path == Path("/srv/arrow.db")
    assert paths.database("user").path == tmp_path / "rel" / "user.db"
    assert paths.sources["databases.user"] == "config databases.user.path"
    environ = {"ARROW_DATABASE_PATH": "/env/a.db", "BACKUP_DIR": "bk", "USER_DATABASE_PATH": ""}
    paths = resolve_paths(settings, environ=environ, cwd=tmp_path, exists=everything)
    assert paths.database("arrow").path == Path("/env/a.db")
    assert paths.database("arrow").member == "arrow_database.db"
    assert paths.database("user").path == tmp_path / "rel" / "user.db"  # empty variable: unset
    assert paths.backup_dir == tmp_path / "bk"
    assert paths.sources["backup_dir"] == "environment BACKUP_DIR"
    assert paths.sources["databases.arrow"] == "environment ARROW_DATABASE_PATH"


def test_other_databases_follow_the_generic_pattern(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    """A database `orders` lives at /app/orders_data/orders.db, else ./databases/orders.db."""
    settings = load_settings(write_config("databases: {orders: {}}\n"), environ={})
    docker = resolve_paths(
        settings, environ={}, cwd=tmp_path, exists=exists_only("/app/orders_data")
    )
    assert docker.database("orders").path == Path("/app/orders_data/orders.db")
    assert docker.database("orders").member == "orders.db"
    local = resolve_paths(settings, environ={}, cwd=tmp_path, exists=exists_only())
    assert local.database("orders").path == tmp_path / "databases" / "orders.db"
    env = resolve_paths(
        settings, environ={"ORDERS_DATABASE_PATH": "/o.db"}, cwd=tmp_path, exists=exists_only()
    )
    assert env.database("orders").path == Path("/o.db")
    with pytest.raises(UsageError):
        env.database("arrow")


def test_load_configuration_reads_sidecar_config(tmp_path: Path, write_config: WriteConfig) -> None:
    """Without --config, $SIDECAR_CONFIG names the file; the result unpacks for the CLI."""
    write_config("timezone: Europe/Berlin\n")
    settings, paths = load_configuration(
        None, environ={"SIDECAR_CONFIG": "sidecar.yaml"}, cwd=tmp_path, exists=exists_only()
    )
    assert settings.timezone == "Europe/Berlin"
    assert paths.backup_dir == tmp_path / "backups"
    loaded = load_configuration(None, environ={}, cwd=tmp_path, exists=exists_only())
    assert loaded.settings.timezone == "UTC"


def test_cpu_threads_reach_the_runtime(
    tmp_path: Path, write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`cpu_threads` from the file or the environment; `auto` overlaps from two CPUs on, paced
    below three."""
    from backup_sidecar import cpus
    from backup_sidecar.jobs import Runtime

    def plan(environ: dict[str, str]) -> tuple[int, bool]:
        settings = load_settings(write_config("cpu_threads: 1\n"), environ=environ)
        rt = Runtime.from_settings(settings, resolve_paths(settings, environ={}, cwd=tmp_path))
        return rt.effort.threads, rt.effort.pace

    monkeypatch.setattr(cpus, "usable_cpus", lambda: 2.0)
    assert plan({}) == (1, False)
    assert plan({"SIDECAR_CPU_THREADS": "2"}) == (2, True)
    assert plan({"SIDECAR_CPU_THREADS": "auto"}) == (2, True)
    monkeypatch.setattr(cpus, "usable_cpus", lambda: 1.0)
    assert plan({"SIDECAR_CPU_THREADS": "auto"}) == (1, False)
    monkeypatch.setattr(cpus, "usable_cpus", lambda: 4.0)
    assert plan({"SIDECAR_CPU_THREADS": "auto"}) == (2, False)
    assert load_settings(None, environ={}).cpu_threads == "auto"


FUZZED_VARIABLES = [
    "SIDECAR_TIMEZONE",
    "SIDECAR_HEALTH__INTERVAL",
    "SIDECAR_HEALTH__MAX_BACKUP_AGE__DAILY",
    "SIDECAR_POLICIES__DAILY__KEEP",
    "SIDECAR_POLICIES__DAILY__SCHEDULE",
    "SIDECAR_POLICIES__EXTRA__EVERY",
    "SIDECAR_POLICIES",
    "SIDECAR_DATABASES",
    "SIDECAR_METRICS__PORT",
    "SIDECAR_CONTROL__MODE",
    "SIDECAR_COMPRESSION_LEVEL",
    "SIDECAR_CPU_THREADS",
    "SIDECAR_GRACE_PERIOD",
]


@given(st.dictionaries(st.sampled_from(FUZZED_VARIABLES), st.text(max_size=40), max_size=4))
def test_any_environment_gives_settings_or_a_config_error(environ: dict[str, str]) -> None:
    """Whatever the environment holds, loading yields Settings or one ConfigError, never another
    exception (which the CLI would show as a traceback)."""
    try:
        load_settings(None, environ=environ)
    except ConfigError as error:
        assert "\n" not in str(error)


HOSTILE_YAML = {
    "5000-digit integer": (f"policies:\n  daily: {{keep: {'9' * 5000}}}\n", "policies.daily.keep"),
    "50,000 nested lists": (f"x: {'[' * 50000}{']' * 50000}\n", "nested deeper than 64"),
    "50,000 nested maps": (f"x: {'{a: ' * 50000}{'}' * 50000}\n", "nested deeper than 64"),
    "deeply nested key": (f"? {'[' * 50000}{']' * 50000}\n: 1\n", "nested deeper than 64"),
    "impossible date": ("timezone: 2001-13-45\n", "timezone: line 1, column 11: invalid value"),
    "infinite interval": ("policies:\n  daily: {every: 1e999, keep: 1}\n", "policies.daily.every"),
    "5000-digit interval": (
        f"policies:\n  daily: {{every: {'9' * 5000}s, keep: 1}}\n",
        "policies.daily.every: duration '99999",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_YAML))
def test_hostile_yaml_gives_one_short_config_error(write_config: WriteConfig, case: str) -> None:
    """Outside attack 1, finding 1: values that made PyYAML or Python raise (the int digit
    limit's ValueError, a RecursionError, a date's ValueError) are one short ConfigError naming
    the file and the key path or line, never a traceback (nor a daemon killed on SIGHUP)."""
    text, fault = HOSTILE_YAML[case]
    path = write_config(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and fault in message, message
    assert "\n" not in message and len(message) < 300, message


def test_oversized_file_is_refused_unparsed(write_config: WriteConfig) -> None:
    """A file over 1 MiB is refused before PyYAML sees it (it would hold several objects per
    character)."""
    path = write_config("timezone: UTC\n" + "#" * (1 << 20) + "\n")
    with pytest.raises(ConfigError, match="is larger than 1 MiB; not a configuration file"):
        load_settings(path, environ={})


def test_config_path_must_be_a_regular_file(tmp_path: Path) -> None:
    """A directory given as the config file is named as one (a FIFO likewise, opened without
    waiting for a writer: tests/reliability/test_config_faults.py)."""
    with pytest.raises(ConfigError, match=r": is a directory, not a regular file$"):
        load_settings(tmp_path, environ={})


def test_deeply_nested_environment_json_is_a_config_error() -> None:
    """A `SIDECAR_POLICIES` of 50,000 nested lists is an error naming the variable, not a
    RecursionError."""
    deep = "[" * 50000 + "]" * 50000
    with pytest.raises(ConfigError) as caught:
        load_settings(None, environ={"SIDECAR_POLICIES": deep})
    assert str(caught.value) == "environment SIDECAR_POLICIES: invalid JSON: nested too deeply"


@given(st.text(max_size=200))
def test_any_yaml_text_gives_settings_or_a_config_error(
    tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    """Whatever a config file holds, loading yields Settings or one ConfigError, never another
    exception."""
    path = tmp_path_factory.mktemp("fuzz") / "sidecar.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    try:
        load_settings(path, environ={})
    except ConfigError as error:
        assert "\n" not in str(error)


def test_a_policy_only_the_environment_made_blames_its_variable(write_config: WriteConfig) -> None:
    """Outside attack 1, finding 13: `SIDECAR_POLICIES__X__EVERY=1s` for a policy the file does
    not have was reported against the file (`FILE: policies.x.keep: Field required`); the key
    is missing from what the variable made, so the variable is named. A policy of the file
    missing its `keep` still blames the file."""
    environ = {"SIDECAR_POLICIES__X__EVERY": "1s"}
    with pytest.raises(ConfigError) as caught:
        load_settings(write_config("policies:\n  daily: {every: 1h, keep: 3}\n"), environ=environ)
    required = f"required: give keep (a count) or a rule ({', '.join(RULE_KEYS)})"
    assert str(caught.value) == (
        f"environment SIDECAR_POLICIES__X__EVERY: policies.x.keep: {required}"
    )
    path = write_config("policies:\n  bare: {every: 1h}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={"SIDECAR_POLICIES__BARE__EVERY": "2h"})
    assert str(caught.value) == f"{path}: policies.bare.keep: {required}"
