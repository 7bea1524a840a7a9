"""Offsite fixtures: one real SeaweedFS for the session, a fresh bucket or directory per test,
fast retry policies (the backoff's sleep is injected), and age keys."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pyrage import x25519

from backup_sidecar.offsite import Lease, Store, parse_target
from support.offsite import fast_retry, new_bucket, s3_store
from support.seaweed import SeaweedMissingError, SeaweedServer

BACKENDS = ("s3", "file")
_prefixes = itertools.count()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """A real S3 server for the whole session; a missing binary fails loudly, never skips."""
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed"))
    try:
        server.start()
    except SeaweedMissingError as exc:
        pytest.fail(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def shared_bucket(seaweed: SeaweedServer) -> str:
    """One bucket for the session; each test writes under its own prefix (many sidecars,
    one bucket)."""
    return new_bucket(seaweed)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def make_store(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Callable[..., Store]:
    """``make_store(**kwargs)``: a Store on a fresh bucket (s3) or directory (file); stores
    made by one test share their bucket/directory and prefix."""
    place: dict[str, str] = {}

    def make(**kwargs: object) -> Store:
        kwargs.setdefault("retry", fast_retry())
        if backend == "file":
            target = parse_target(f"file://{tmp_path / 'offsite'}")
            return Store(target, **kwargs)  # type: ignore[arg-type]
        server: SeaweedServer = request.getfixturevalue("seaweed")
        bucket: str = request.getfixturevalue("shared_bucket")
        if "prefix" not in place:
            place["prefix"] = f"site-{next(_prefixes)}/archives"
        return s3_store(server, bucket, place["prefix"], **kwargs)

    return make


@pytest.fixture
def store(make_store: Callable[..., Store]) -> Store:
    return make_store()


@pytest.fixture
def lease(store: Store) -> Iterator[Lease]:
    """This test's sidecar holding the store's prefix (every write needs it)."""
    held = Lease(store, ttl=300)
    assert held.acquire().writable
    yield held
    held.release()


@pytest.fixture
def age_identity(tmp_path: Path) -> tuple[x25519.Identity, Path]:
    """A fresh age identity and its identity file (mode 0600, with a comment line)."""
    identity = x25519.Identity.generate()
    path = tmp_path / "offsite.key"
    path.write_text(f"# created: by the test\n# public key: {identity.to_public()}\n{identity}\n")
    path.chmod(0o600)
    return identity, path
