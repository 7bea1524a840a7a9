"""Dockerfile.sidecar read as instructions, and a volume tree laid out like the container's."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from support.paths import ROOT

DOCKERFILE = ROOT / "Dockerfile.sidecar"


@dataclass(frozen=True)
class Instruction:
    stage: int  # 0 = before the first FROM
    keyword: str
    args: str

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form ENTRYPOINT/CMD (AssertionError if shell form)."""
        text = self.args.split(" CMD ", 1)[1] if self.keyword == "HEALTHCHECK" else self.args
        value = json.loads(text)
        assert isinstance(value, list), f"{self.keyword} is not in exec form: {self.args}"
        return [str(v) for v in value]


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    logical, pending = [], ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stage, found = 0, []
    for entry in logical:
        keyword, _, args = entry.strip().partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        found.append(Instruction(stage, keyword, re.sub(r"\s+", " ", args.strip())))
    return found


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def image_command(instructions: list[Instruction]) -> list[str]:
    """What the container runs by default: the final stage's ENTRYPOINT + CMD."""
    stage = final_stage(instructions)
    [entrypoint] = [i for i in stage if i.keyword == "ENTRYPOINT"]
    [cmd] = [i for i in stage if i.keyword == "CMD"]
    return entrypoint.exec_form() + cmd.exec_form()


def build_arg_default(instructions: list[Instruction], name: str) -> str:
    for i in final_stage(instructions):
        if i.keyword == "ARG" and i.args.startswith(f"{name}="):
            return i.args.split("=", 1)[1]
    raise AssertionError(f"no ARG {name}=default in the final stage")


@dataclass(frozen=True)
class VolumeTree:
    """A temp tree laid out like the container's mounts, owned by uid:gid."""

    root: Path
    uid: int
    gid: int

    @property
    def app(self) -> Path:
        return self.root / "app"

    @property
    def arrow_db(self) -> Path:
        return self.app / "arrow_data" / "arrow_database.db"

    @property
    def user_db(self) -> Path:
        return self.app / "user_data" / "user_data.db"

    @property
    def backups(self) -> Path:
        return self.app / "backups"

    @property
    def socket(self) -> Path:
        return self.root / "run" / "backup-sidecar" / "control.sock"
