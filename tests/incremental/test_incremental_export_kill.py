"""A killed `export NAME` leaves nothing beside its output: the archive is written into an
unnamed file (O_TMPFILE) and linked in only when complete."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from backup_sidecar import jobs
from backup_sidecar.jobs.pageexport import export_backup
from support.databases import make_db
from support.incremental import incremental_runtime


def test_a_killed_export_leaves_no_part_file(tmp_path: Path, backup_dir: Path) -> None:
    """A real process running the export is SIGKILLed after writing part of the tar.gz (the
    kill is injected at the tar writer, the boundary): the output directory stays empty (the
    old code left a hidden `.NAME.tar.gz.export-part` there), and the next export of the
    same name to the same place succeeds."""
    user = make_db(tmp_path / "user_data.db", wal=True, rows=2000)
    rt = incremental_runtime(backup_dir, {"user": user})
    name = jobs.run_backup(rt, policy="hourly").name
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from backup_sidecar.jobs import pageexport
        from support.incremental import incremental_runtime

        def killed(raw, *args):
            raw.write(b"\\x1f\\x8b" + b"partial" * 1000)
            raw.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        pageexport._write_tar = killed
        rt = incremental_runtime(Path({str(backup_dir)!r}), {{"user": Path({str(user)!r})}})
        pageexport.export_backup(rt, {name!r}, out=None, cwd=Path({str(out_dir)!r}))
        """
    )
    support = str(Path(__file__).parents[1])
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env={"PYTHONPATH": support, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == []
    out = export_backup(rt, name, out=None, cwd=out_dir)
    assert sorted(p.name for p in out_dir.iterdir()) == [f"{name}.tar.gz"]
    assert out == out_dir / f"{name}.tar.gz"
