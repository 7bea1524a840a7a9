"""Run a command and write its exact rusage as JSON: ``python -S spawn.py OUT.json CMD...``.

A process's peak RSS (``ru_maxrss``) starts at its parent's RSS at fork time: a command forked
straight from the benchmark harness would report the harness's ~80 MiB. Forking from this
small interpreter (started with -S, a few MiB) keeps that floor low; the floor is reported.
"""

import json
import os
import resource
import sys
import time


def main() -> None:
    out, cmd = sys.argv[1], sys.argv[2:]
    floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.monotonic()
    pid = os.posix_spawnp(cmd[0], cmd, os.environ)
    _, status, ru = os.wait4(pid, 0)
    wall = time.monotonic() - t0
    code = os.waitstatus_to_exitcode(status)
    with open(out, "w") as f:  # noqa: PTH123 - pathlib would cost this tiny process imports
        json.dump(
            {
                "wall_s": wall,
                "user_s": ru.ru_utime,
                "sys_s": ru.ru_stime,
                "maxrss_kib": ru.ru_maxrss,
                "floor_kib": floor,
                "returncode": code,
            },
            f,
        )
    sys.exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()
