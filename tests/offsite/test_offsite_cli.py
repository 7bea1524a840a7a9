"""`list --offsite` and `restore --from-offsite` through the real CLI (subprocesses) against the
session's SeaweedFS and a file:// directory: archives made by the real `backup`, uploaded by the
offsite library (the upload job is not wired yet)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import obstore
import pytest
from pyrage import x25519

from backup_sidecar.offsite import Lease, Store, parse_recipients, parse_target
from support.archives import flip_database_byte
from support.cli import cli_command, cli_env, one_error_line, run_cli
from support.databases import dump, integrity, make_big_db, make_db
from support.offsite import fast_retry, s3_store
from support.seaweed import SeaweedServer
from support.waiting import wait_until


@dataclass
class Site:
    """One sidecar's databases, backup directory and configuration, and its offsite store
    (opened by the test as an uploader would)."""

    root: Path
    store: Store
    lease: Lease
    env: dict[str, str]
    identity: x25519.Identity
    offsite_yaml: dict[str, object] = field(default_factory=dict)

    @property
    def backup_dir(self) -> Path:
        return self.root / "backups"

    @property
    def user(self) -> Path:
        return self.root / "data" / "user_data.db"

    @property
    def arrow(self) -> Path:
        return self.root / "data" / "arrow_database.db"

    def config(self, **encryption: object) -> Path:
        """The YAML file (offsite section plus ``encryption`` when given)."""
        section: dict[str, object] = dict(self.offsite_yaml)
        if encryption:
            section["encryption"] = encryption
        path = self.root / "sidecar.yaml"
        path.write_text(json.dumps({"offsite": section}))
        return path

    def cli(self, *args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, config=config or self.config(), env=self.env, timeout=120)

    def backup_and_upload(self, name: str, *, encrypt: bool, policy: str = "manual") -> str:
        """A real backup of ``policy`` named ``name``, uploaded (age-encrypted when asked); the
        object name."""
        result = self.cli("backup", "--policy", policy, "--name", name)
        assert result.returncode == 0, result.stderr
        recipients = parse_recipients([str(self.identity.to_public())]) if encrypt else ()
        archive = self.backup_dir / f"{name}.tar.gz"
        return self.store.upload(archive, lease=self.lease, recipients=recipients).name

    def identity_file(self, identity: x25519.Identity | None = None) -> Path:
        path = self.root / "age.key"
        path.write_text(f"# test identity\n{identity or self.identity}\n")
        path.chmod(0o600)
        return path

    def wipe(self) -> None:
        """A lost host: no archives, no databases."""
        shutil.rmtree(self.backup_dir)
        self.backup_dir.mkdir()
        for db in self.root.joinpath("data").iterdir():
            db.unlink()


@pytest.fixture
def site(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Site]:
    """Two real databases (WAL and rollback journal), a backup directory, and the offsite
    store of ``backend`` with this test's lease on it."""
    root = tmp_path / "site"
    make_db(root / "data" / "user_data.db", wal=True, rows=300, tag="user")
    make_db(root / "data" / "arrow_database.db", wal=False, rows=200, tag="arrow")
    (root / "backups").mkdir()
    env = cli_env(root / "backups", user=root / "data" / "user_data.db")
    if backend == "file":
        url = f"file://{tmp_path / 'offsite'}"
        store = Store(parse_target(url), retry=fast_retry())
        yaml: dict[str, object] = {"url": url}
    else:
        server: SeaweedServer = request.getfixturevalue("seaweed")
        bucket: str = request.getfixturevalue("shared_bucket")
        prefix = f"cli-{tmp_path.name}"
        store = s3_store(server, bucket, prefix, retry=fast_retry())
        yaml = {"url": f"s3://{bucket}/{prefix}", "endpoint": server.endpoint, "path_style": True}
        env.update(server.env())
    lease = Lease(store, ttl=300)
    assert lease.acquire().writable
    try:
        yield Site(root, store, lease, env, x25519.Identity.generate(), yaml)
    finally:
        lease.release()


def raw_key(store: Store, relative: str) -> str:
    """The store key of ``relative`` under the prefix, even a name the Store would refuse."""
    return store.key("x").removesuffix("x") + relative


def until_the_store_clock_passes(store: Store, name: str) -> None:
    """Wait until an object written now is dated after ``name`` on the store's clock (S3
    dates objects to the second), so the upload order is unambiguous."""
    first = store.objects.head(store.key(name))
    assert first is not None
    probe = raw_key(store, ".offsite/clock/test-probe")

    def passed() -> bool:
        store.objects.put(probe, b"")
        meta = store.objects.head(probe)
        return meta is not None and meta.modified > first.modified

    wait_until(passed, timeout=10, what="the store's clock to pass the first upload")
    store.objects.delete(probe)


def entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_list_offsite_shows_archives_and_problems(site: Site) -> None:
    """Each object with its size, encryption and confirmation (or why not); a stray key and an
    orphaned record are one problem line each; exit 0, in text and JSON."""
    plain = site.backup_and_upload("first", encrypt=False)
    sealed = site.backup_and_upload("second", encrypt=True)
    backend = site.store.objects.backend
    obstore.put(backend, site.store.key("unfinished.tar.gz"), b"half an upload")
    obstore.put(backend, raw_key(site.store, "bad name!"), b"x")
    obstore.put(backend, site.store.record_key("gone.tar.gz"), b"{}")
    result = site.cli("list", "--offsite", "--json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert listed["url"] == site.store.url
    by_object = {a["object"]: a for a in listed["archives"]}
    assert sorted(by_object) == [plain, sealed, "unfinished.tar.gz"]
    assert (by_object[plain]["name"], by_object[plain]["encrypted"]) == ("first", False)
    assert (by_object[sealed]["name"], by_object[sealed]["encrypted"]) == ("second", True)
    assert by_object[plain]["confirmed"] and by_object[sealed]["confirmed"]
    assert by_object[plain]["size"] == (site.backup_dir / "first.tar.gz").stat().st_size
    assert not by_object["unfinished.tar.gz"]["confirmed"]
    assert "no checksum record" in by_object["unfinished.tar.gz"]["reason"]
    problems = sorted((p["key"].rsplit("/", 1)[-1], p["reason"]) for p in listed["problems"])
    assert problems == [
        ("bad name!", "not an archive object name"),
        ("gone.tar.gz.json", "checksum record without object"),
    ]
    text = site.cli("list", "--offsite")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].split()[:2] == ["OBJECT", "UPLOADED"]
    row = next(line for line in lines if line.startswith(sealed))
    assert row.split()[-2:] == ["yes", "confirmed"]
    assert any(line.startswith("unfinished.tar.gz") and "unconfirmed" in line for line in lines)
    assert sum(line.startswith("problem: ") for line in lines) == 2


def test_restore_from_offsite_brings_back_a_lost_host(site: Site) -> None:
    """Disaster recovery: archives and databases gone, `restore NAME --from-offsite --force`
    downloads, checks, decrypts, verifies and restores; the databases equal the originals."""
    name = site.backup_and_upload("nightly", encrypt=True)
    assert name == "nightly.tar.gz.age"
    before = {db: dump(db) for db in (site.user, site.arrow)}
    site.wipe()
    config = site.config(recipients=[str(site.identity.to_public())], identity_file="age.key")
    site.identity_file()
    result = run_cli(
        "restore",
        "nightly",
        "--from-offsite",
        "--force",
        config=config,
        env=site.env,
        cwd=site.root,
    )
    assert result.returncode == 0, result.stderr
    assert "restored arrow, user from nightly" in result.stdout
    assert "downloaded nightly.tar.gz.age as nightly" in result.stderr
    for db, rows in before.items():
        assert dump(db) == rows
        assert integrity(db) == "ok"
    listed = json.loads(site.cli("list", "--json", config=config).stdout)
    assert {a["name"]: a["status"] for a in listed}["nightly"] == "verified"


def test_restore_latest_from_offsite_takes_the_newest_upload(site: Site) -> None:
    """`--latest` picks the newest confirmed upload by the store's clock, not by name: the
    databases hold the second backup's rows."""
    older = site.backup_and_upload(LATER_NAME, encrypt=False, policy="daily")
    subprocess.run(
        ["sqlite3", str(site.user), "INSERT INTO items(body) VALUES ('after the first')"],
        check=True,
    )
    newest_rows = dump(site.user)
    until_the_store_clock_passes(site.store, older)
    site.backup_and_upload(EARLIER_NAME, encrypt=False, policy="daily")
    site.wipe()
    result = site.cli("restore", "--latest", "--from-offsite", "--force", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["archive"] == EARLIER_NAME
    assert dump(site.user) == newest_rows


def test_wrong_or_missing_identity_is_one_error_and_nothing_is_touched(site: Site) -> None:
    """An encrypted object with the wrong identity, no identity_file, or an unreadable one:
    one error line, the live databases and the backup directory exactly as they were."""
    site.backup_and_upload("sealed", encrypt=True)
    (site.backup_dir / "sealed.tar.gz").unlink()
    before = {db: dump(db) for db in (site.user, site.arrow)}
    listing = entries(site.backup_dir)
    public = str(site.identity.to_public())
    cases: list[tuple[Callable[[], Path], int, str]] = [
        (
            lambda: site.config(
                recipients=[public],
                identity_file=str(site.identity_file(x25519.Identity.generate())),
            ),
            1,
            "cannot decrypt offsite object 'sealed.tar.gz.age' with identity",
        ),
        (
            lambda: site.config(recipients=[public]),
            1,
            "offsite.encryption.identity_file (not set): no identity given",
        ),
        (
            lambda: site.config(recipients=[public], identity_file=str(site.root / "absent")),
            2,
            "cannot read the identity file",
        ),
    ]
    for make_config, code, message in cases:
        result = site.cli("restore", "sealed", "--from-offsite", "--force", config=make_config())
        assert result.returncode == code, result.stderr
        assert message in one_error_line(result)
        assert entries(site.backup_dir) == listing
        assert {db: dump(db) for db in before} == before


def test_restore_from_offsite_refusals_name_the_fault(site: Site) -> None:
    """No offsite section, --latest without --from-offsite, an absent name, a tampered object
    and an empty store: one line each, nothing written."""
    assert "no offsite store configured" in one_error_line(
        run_cli("restore", "x", "--from-offsite", env=site.env)
    )
    assert "--latest needs --from-offsite" in one_error_line(site.cli("restore", "--latest"))
    empty = site.cli("restore", "--latest", "--from-offsite", "--force")
    assert empty.returncode == 1
    assert f"no confirmed archive of the configured policies in {site.store.url}" in one_error_line(
        empty
    )
    absent = site.cli("restore", "nope", "--from-offsite", "--force")
    assert "no offsite object named 'nope.tar.gz'" in one_error_line(absent)
    site.backup_and_upload("kept", encrypt=False)
    (site.backup_dir / "kept.tar.gz").unlink()
    obstore.put(site.store.objects.backend, site.store.key("kept.tar.gz"), b"not the archive")
    before = entries(site.backup_dir)
    tampered = site.cli("restore", "kept", "--from-offsite", "--force")
    assert tampered.returncode == 1
    assert "offsite object 'kept.tar.gz' refused" in one_error_line(tampered)
    assert entries(site.backup_dir) == before


@pytest.mark.parametrize("backend", ["file"])
def test_planted_entries_in_a_file_store_stop_neither_list_nor_restore(
    site: Site, tmp_path: Path
) -> None:
    """A name that is not UTF-8, a link loop, and a link to a valid archive outside the store
    that its record vouches for: `list --offsite` shows the good archive and one problem line
    each (exit 0; before, it failed outright); the good archive restores by name; the linked
    one is refused in one line naming it, nothing written (before, it was restored from
    outside the store)."""
    site.backup_and_upload("good", encrypt=False)
    site.backup_and_upload("other", encrypt=False)
    root = tmp_path / "offsite"
    outside = tmp_path / "outside.tar.gz"
    # Moved out (same inode, size and mtime: its record still vouches for it), linked back.
    (root / "other.tar.gz").rename(outside)
    (root / "other.tar.gz").symlink_to(outside)
    (site.backup_dir / "other.tar.gz").unlink()
    Path(os.fsdecode(bytes(root) + b"/bad-\xff.tar.gz")).write_bytes(b"x")
    (root / "loop").symlink_to(root / "loop")
    listed = site.cli("list", "--offsite")
    assert listed.returncode == 0, listed.stderr
    problems = sorted(ln for ln in listed.stdout.splitlines() if ln.startswith("problem: "))
    assert [ln.split(":")[1].strip() for ln in problems] == [
        ".offsite/sums/other.tar.gz.json",  # its object is now the link's: not one
        "bad-\\xff.tar.gz",
        "loop",
        "other.tar.gz",
    ], listed.stdout
    assert "not UTF-8" in problems[1]
    assert "is a symbolic link" in problems[2] and "is a symbolic link" in problems[3]
    assert any(ln.startswith("good.tar.gz") for ln in listed.stdout.splitlines())
    (site.backup_dir / "good.tar.gz").unlink()
    good = site.cli("restore", "good", "--from-offsite", "--force")
    assert good.returncode == 0, good.stderr
    before = entries(site.backup_dir)
    linked = site.cli("restore", "other", "--from-offsite", "--force")
    assert linked.returncode == 1
    assert "other.tar.gz is a symbolic link" in one_error_line(linked)
    assert entries(site.backup_dir) == before


def _partial_downloads(backup_dir: Path) -> list[Path]:
    """Every file a download is still writing, anywhere under the backup directory."""
    return [
        Path(top) / name
        for top, _, files in os.walk(backup_dir)
        for name in files
        if name.endswith(".offsite-part")
    ]


def test_a_download_killed_midway_is_cleaned_up_by_the_next_restore(site: Site) -> None:
    """kill -9 of `restore --from-offsite` while the archive is arriving: the partial file is
    in a locked staging area, which the next restore removes as abandoned before it fetches
    again; nothing is left behind. (It was a hidden `.NAME.tar.gz.*.offsite-part` beside the
    archives, which nothing ever removed.)"""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{site.user}{suffix}").unlink(missing_ok=True)
    make_big_db(site.user, megabytes=64)
    site.backup_and_upload("big", encrypt=False)
    (site.backup_dir / "big.tar.gz").unlink()
    config = site.config()
    proc = subprocess.Popen(
        cli_command("restore", "big", "--from-offsite", "--force", config=config),
        env=site.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(
            lambda: _partial_downloads(site.backup_dir) or proc.poll() is not None,
            timeout=60,
            what="the download to start writing",
        )
        assert proc.poll() is None, "the download finished before it could be killed"
        proc.kill()
    finally:
        proc.communicate(timeout=60)
    assert _partial_downloads(site.backup_dir), "the killed download left its partial file"

    result = site.cli("restore", "big", "--from-offsite", "--force", config=config)
    assert result.returncode == 0, result.stderr
    assert _partial_downloads(site.backup_dir) == []
    assert list((site.backup_dir / ".staging").iterdir()) == []
    assert integrity(site.user) == "ok"


def archives_in(backup_dir: Path) -> list[str]:
    return sorted(p.name for p in backup_dir.glob("*.tar.gz"))


#: Default names of the configured `daily` policy (`--latest` takes no other copy), the one
#: made later sorting first.
EARLIER_NAME, LATER_NAME = "daily_20261207_010000", "daily_20261207_090000"


def upload_rotten(site: Site, name: str, *, recipients: tuple[x25519.Recipient, ...] = ()) -> str:
    """A real `daily` backup whose database member then rots (one deflate byte flipped: the
    metadata still reads, `list` says verified), uploaded as it is, so its checksum record
    vouches for the rotten bytes; the local file is removed. The object's name."""
    assert site.cli("backup", "--policy", "daily", "--name", name).returncode == 0
    local = site.backup_dir / f"{name}.tar.gz"
    flip_database_byte(local)
    uploaded = site.store.upload(local, lease=site.lease, recipients=recipients).name
    local.unlink()
    return uploaded


def test_a_copy_that_fails_verify_leaves_nothing_in_the_backup_directory(site: Site) -> None:
    """An object that passes its checksum record but not the archiver's verify: `restore NAME
    --from-offsite` is one error naming the fault, and nothing enters the backup directory
    (it was left there, listed damaged or even verified); `--latest` with no other copy says
    it tried it and found none usable. Databases untouched, no staging leftover."""
    rotten = upload_rotten(site, EARLIER_NAME)
    before = {db: dump(db) for db in (site.user, site.arrow)}
    named = site.cli("restore", EARLIER_NAME, "--from-offsite", "--force")
    assert named.returncode == 1, named.stderr
    assert f"archive '{EARLIER_NAME}' is corrupt" in one_error_line(named)
    assert archives_in(site.backup_dir) == []
    assert list((site.backup_dir / ".staging").iterdir()) == []
    latest = site.cli("restore", "--latest", "--from-offsite", "--force")
    assert latest.returncode == 1, latest.stderr
    assert f"warning: offsite copy {rotten} unusable (archive '{EARLIER_NAME}' is corrupt" in (
        latest.stderr
    )
    assert (
        f"no confirmed archive in {site.store.url} downloaded and verified: 1 tried"
        in latest.stderr.splitlines()[-1]
    )
    assert archives_in(site.backup_dir) == []
    assert list((site.backup_dir / ".staging").iterdir()) == []
    assert {db: dump(db) for db in before} == before


def test_restore_latest_falls_back_past_a_bad_newest_copy(site: Site) -> None:
    """The newest confirmed copy fails verify: `--latest` says so on stderr and restores the
    next newest (age-encrypted, both), leaving only that one in the backup directory. Run
    again, it passes over the bad one again and uses the good archive already there (same
    SHA-256) instead of stopping at the name being taken."""
    recipients = tuple(parse_recipients([str(site.identity.to_public())]))
    good = site.backup_and_upload(EARLIER_NAME, encrypt=True, policy="daily")
    good_rows = dump(site.user)
    subprocess.run(
        ["sqlite3", str(site.user), "INSERT INTO items(body) VALUES ('after good')"], check=True
    )
    until_the_store_clock_passes(site.store, good)
    rotten = upload_rotten(site, LATER_NAME, recipients=recipients)
    site.wipe()
    config = site.config(
        recipients=[str(site.identity.to_public())], identity_file=str(site.identity_file())
    )
    for reused in (False, True):
        result = site.cli("restore", "--latest", "--from-offsite", "--force", config=config)
        assert result.returncode == 0, result.stderr
        assert f"warning: offsite copy {rotten} unusable" in result.stderr
        assert "trying the next newest confirmed copy" in result.stderr
        said = "already in the backup directory" if reused else f"downloaded {good} as "
        assert said in result.stderr
        assert f"restored arrow, user from {EARLIER_NAME}" in result.stdout
        assert dump(site.user) == good_rows
        assert f"{EARLIER_NAME}.tar.gz" in archives_in(site.backup_dir)
        assert f"{LATER_NAME}.tar.gz" not in archives_in(site.backup_dir)


def test_a_local_archive_of_the_same_name_is_used_or_kept_untouched(site: Site) -> None:
    """The name is taken in the backup directory: by the same archive, it is used (not
    downloaded over: known by the record's source SHA-256, or for a record without one, by
    the downloaded copy's); by another archive, or by a damaged copy of this one, the restore is
    one error saying which, and the local file and the databases stay exactly as they were."""
    site.backup_and_upload("kept", encrypt=False)
    local = site.backup_dir / "kept.tar.gz"
    inode = local.stat().st_ino
    same = site.cli("restore", "kept", "--from-offsite", "--force", "--json")
    assert same.returncode == 0, same.stderr
    assert json.loads(same.stdout)["offsite"] == {
        "object": "kept.tar.gz",
        "reused": True,
        "skipped": [],
    }
    assert local.stat().st_ino == inode
    record_key = site.store.record_key("kept.tar.gz")
    record = json.loads(site.store.objects.read_small(record_key, 65536) or b"{}")
    del record["source_sha256"]  # a record from before it existed: compared after a download
    site.store.objects.put(record_key, json.dumps(record).encode())
    older = site.cli("restore", "kept", "--from-offsite", "--force")
    assert older.returncode == 0, older.stderr
    assert "kept is already in the backup directory, the same archive as" in older.stderr
    assert local.stat().st_ino == inode
    assert site.cli("backup", "--name", "other").returncode == 0
    another = (site.backup_dir / "other.tar.gz").read_bytes()
    before = {db: dump(db) for db in (site.user, site.arrow)}
    flip_database_byte(local)
    damaged = local.read_bytes()
    for why, held in (("is another archive (sha256 ", another), ("is damaged (", damaged)):
        local.write_bytes(held)
        result = site.cli("restore", "kept", "--from-offsite", "--force")
        assert result.returncode == 1, result.stderr
        line = one_error_line(result)
        assert f"archive 'kept.tar.gz' already exists in {site.backup_dir} and {why}" in line
        assert "the local file is kept as it is" in line
        assert local.read_bytes() == held
        assert {db: dump(db) for db in before} == before
