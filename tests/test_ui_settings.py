"""The `ui` section and the page's credentials: loopback by default, no page off the loopback
interface without authentication, secrets only from the environment, hashes that check."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import ClassVar

import pytest

from backup_sidecar.errors import ConfigError
from backup_sidecar.service.ui_auth import Gate, PasswordHash, hash_password
from backup_sidecar.settings import load_settings
from backup_sidecar.settings.ui import UiConfig
from support.cli import run_cli


def _config(tmp_path: Path, ui: str) -> Path:
    path = tmp_path / "sidecar.yaml"
    path.write_text(f"backup_dir: {tmp_path / 'b'}\nui:\n{ui}")
    return path


def test_ui_is_off_and_loopback_by_default() -> None:
    """Nothing listens unless asked, and then only on the loopback interface."""
    ui = load_settings(None, environ={}).ui
    assert not ui.enabled and ui.address == ("127.0.0.1", 8089)


@pytest.mark.parametrize("listen", ["0.0.0.0:8089", "[::]:8089", "10.0.0.5:80"])
def test_config_check_refuses_an_open_page_off_loopback(tmp_path: Path, listen: str) -> None:
    """`config check` names ui.listen in one line when the page would listen beyond the loopback
    interface with no token nor password."""
    path = _config(tmp_path, f'  enabled: true\n  listen: "{listen}"\n')
    done = run_cli("config", "check", str(path))
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert "ui.listen" in line and "not a loopback address" in line and str(path) in line


@pytest.mark.parametrize("listen", ["localhost:8089", "[::1]:9", "127.0.0.2:8089"])
def test_loopback_without_auth_and_anything_with_auth_is_accepted(
    tmp_path: Path, listen: str
) -> None:
    """Loopback needs no credential; any address with a token variable is accepted."""
    assert UiConfig(enabled=True, listen=listen).address[1] in (8089, 9)
    path = _config(tmp_path, '  enabled: true\n  listen: "0.0.0.0:8089"\n  token_env: T\n')
    done = run_cli("config", "check", str(path))
    assert done.returncode == 0, done.stderr
    assert "ui: http://0.0.0.0:8089/ (authenticated)" in done.stdout


def test_a_malformed_listen_is_one_line(tmp_path: Path) -> None:
    """A listen value that is not host:port is refused naming ui.listen."""
    done = run_cli("config", "check", str(_config(tmp_path, '  listen: "8089"\n')))
    assert done.returncode == 2 and "ui.listen" in done.stderr and "host:port" in done.stderr


def test_hash_password_command_and_basic_auth(tmp_path: Path) -> None:
    """The CLI's hash (password on stdin) checks the right password for the configured user
    only; a bearer token checks only itself, and passes as the configured user's password."""
    done = run_cli("config", "hash-password", input="s3cret pass\n")
    assert done.returncode == 0, done.stderr
    encoded = done.stdout.strip()
    assert encoded.startswith("scrypt$") and "s3cret" not in encoded
    cfg = UiConfig(enabled=True, user="ops", password_hash_env="H", token_env="T")  # noqa: S106
    gate = Gate.from_config(cfg, {"H": encoded, "T": "t" * 20})

    def basic(user: str, password: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    assert gate.allows(basic("ops", "s3cret pass"))
    assert not gate.allows(basic("ops", "s3cret pas"))
    assert not gate.allows(basic("root", "s3cret pass"))
    assert not gate.allows("Basic !!notbase64")
    assert gate.allows("Bearer " + "t" * 20)
    assert gate.allows(basic("ops", "t" * 20))  # the token as the password: a browser's login
    assert not gate.allows(basic("root", "t" * 20)) and not gate.allows(basic("ops", "t" * 19))
    assert not gate.allows("Bearer " + "t" * 19) and not gate.allows(None)


@pytest.mark.parametrize(
    ("environ", "named"),
    [({}, "environment T: ui.token_env"), ({"T": "short"}, "environment T: ui.token_env"),
     ({"T": "t" * 20, "H": "plain"}, "environment H: ui.password_hash_env")],
)  # fmt: skip
def test_missing_or_malformed_secrets_name_their_variable(
    environ: dict[str, str], named: str
) -> None:
    """An unset, short or malformed secret is a ConfigError naming the variable, never echoed."""
    cfg = UiConfig(enabled=True, token_env="T", password_hash_env="H")  # noqa: S106
    with pytest.raises(ConfigError) as info:
        Gate.from_config(cfg, environ)
    assert str(info.value).startswith(named)
    assert "plain" not in str(info.value).replace("plaintext", "")


def test_csrf_token_is_per_process_and_checked_exactly() -> None:
    """Two daemons' tokens differ; only the exact token passes."""
    one, two = Gate(token=None, user="a", password=None), Gate(token=None, user="a", password=None)
    assert one.csrf_token() != two.csrf_token()
    assert one.csrf_ok(one.csrf_token())
    assert not one.csrf_ok(two.csrf_token()) and not one.csrf_ok(None) and not one.csrf_ok("")
    assert PasswordHash.parse(hash_password("x")).matches("x")


class _CountingHash(PasswordHash):
    """A real scrypt hash that counts its checks."""

    checks: ClassVar[list[str]] = []

    def matches(self, password: str) -> bool:
        self.checks.append(password)
        return super().matches(password)


def test_a_passed_basic_auth_is_checked_once_a_wrong_one_every_time() -> None:
    """A browser resends basic auth with every request (page, stylesheet, script, each progress
    poll): the scrypt check (0.05-0.2 CPU-s) runs once for the right password, but every time
    for a wrong one, so guessing stays as slow as the hash makes it."""
    real = PasswordHash.parse(hash_password("right"))
    counted = _CountingHash(n=real.n, r=real.r, p=real.p, salt=real.salt, digest=real.digest)
    gate = Gate(token=None, user="ops", password=counted)

    def basic(password: str) -> str:
        return "Basic " + base64.b64encode(f"ops:{password}".encode()).decode()

    assert all(gate.allows(basic("right")) for _ in range(5))
    assert not any(gate.allows(basic("wrong")) for _ in range(3))
    assert _CountingHash.checks == ["right", "wrong", "wrong", "wrong"]


@pytest.mark.parametrize(
    ("lines", "says"),
    [
        ('  user: "ops:admin"\n', "ui.user"),
        ('  token_env: "1 2"\n', "ui.token_env"),
        ('  password_hash_env: "UI-HASH"\n', "ui.password_hash_env"),
    ],
)
def test_names_that_can_never_work_are_refused(tmp_path: Path, lines: str, says: str) -> None:
    """A user name with ':' (basic auth could never match it) or a variable name that is no
    environment variable name is one `config check` line naming the key."""
    done = run_cli("config", "check", str(_config(tmp_path, "  enabled: true\n" + lines)))
    assert done.returncode == 2, done.stdout
    [line] = done.stderr.strip().splitlines()
    assert says in line and str(tmp_path) in line, line


def test_hash_password_refuses_several_lines() -> None:
    """A multi-line stdin is refused (hashing only its first line would make a password that
    is not the one given); one line, with or without its newline, is hashed."""
    done = run_cli("config", "hash-password", input="first\nsecond\n")
    assert done.returncode == 2 and "more than one line" in done.stderr and not done.stdout
    assert run_cli("config", "hash-password", input="one line").stdout.startswith("scrypt$")
