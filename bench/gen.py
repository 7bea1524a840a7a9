"""Deterministic, realistic SQLite databases for the benchmarks, and "one day of writes".

The schema looks like an application's user database: users, bow setups, sessions and a large
event log, with text drawn from a Zipf-like vocabulary, JSON documents, numbers, random hex
tokens and secondary indexes, in WAL mode. The same seed and size give the same rows.

    python -m bench.gen OUT.db [--size-mib 1024] [--seed 1]
    python -m bench.gen OUT.db --mutate [--seed 2]     # ~1% of rows changed or added
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sqlite3
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
    created_at TEXT NOT NULL, api_token TEXT NOT NULL, settings TEXT NOT NULL);
CREATE TABLE bow_setups (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, name TEXT NOT NULL,
    draw_weight REAL, draw_length REAL, config TEXT NOT NULL, notes TEXT);
CREATE TABLE sessions (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL,
    setup_id INTEGER NOT NULL, started_at TEXT NOT NULL, score INTEGER, arrows_shot INTEGER,
    notes TEXT, data TEXT NOT NULL);
CREATE TABLE events (id INTEGER PRIMARY KEY, session_id INTEGER NOT NULL, kind TEXT NOT NULL,
    at REAL NOT NULL, token TEXT NOT NULL, payload TEXT NOT NULL);
CREATE INDEX users_created ON users (created_at);
CREATE INDEX setups_user ON bow_setups (user_id);
CREATE INDEX sessions_user_time ON sessions (user_id, started_at);
CREATE INDEX events_session ON events (session_id);
CREATE INDEX events_kind_time ON events (kind, at);
CREATE INDEX events_token ON events (token);
"""

KINDS = ("shot", "tune", "note", "sight_adjust", "rest_adjust", "photo", "score")
_EPOCH = 1_700_000_000.0
_CORPUS_WORDS = 1 << 20


class Rows:
    """Row factories over one seeded RNG; each call returns the next rows of a table."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        # Words built from syllables, like a natural language's, compress like one.
        syllables = [c + v for c in "bcdfghklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ar")]
        vocab = ["".join(self.rng.choices(syllables, k=self.ri(1, 3))) for _ in range(4_000)]
        # A Zipf-like corpus (natural text repeats a few words a lot), sliced at word
        # boundaries: far cheaper than drawing every word of every row.
        cum = list(itertools.accumulate(1.0 / (i + 1) ** 1.1 for i in range(len(vocab))))
        words = self.rng.choices(vocab, cum_weights=cum, k=_CORPUS_WORDS)
        self.words = vocab
        self.corpus = " ".join(words) + " "
        self.starts = [0, *itertools.accumulate(len(w) + 1 for w in words)]

    def ri(self, lo: int, hi: int) -> int:
        """randint, without its argument checks (this is the generator's hot path)."""
        return lo + int(self.rng.random() * (hi - lo + 1))

    def text(self, lo: int, hi: int) -> str:
        n = self.ri(lo, hi)
        i = int(self.rng.random() * (_CORPUS_WORDS - n))
        return self.corpus[self.starts[i] : self.starts[i + n] - 1]

    def token(self) -> str:
        return self.rng.randbytes(8).hex()

    def user(self, uid: int) -> tuple[object, ...]:
        r = self.rng
        created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(_EPOCH - r.random() * 9e7))
        settings = {
            "theme": r.choice(("dark", "light")),
            "units": r.choice(("imperial", "si")),
            "notify": r.random() < 0.5,
            "bio": self.text(5, 25),
        }
        name = self.text(2, 3).title()
        return (
            uid,
            f"user{uid}@{r.choice(self.words)}.example",
            name,
            created,
            self.token(),
            json.dumps(settings),
        )

    def setup(self, sid: int, users: int) -> tuple[object, ...]:
        r = self.rng
        config = {
            "riser": self.text(1, 3),
            "limbs": self.text(1, 3),
            "brace": r.uniform(6, 9),
            "tiller": [self.ri(-5, 5), self.ri(-5, 5)],
            "arrow": self.token()[:12],
        }
        return (
            sid,
            self.ri(1, users),
            self.text(1, 4),
            round(r.uniform(20, 70), 1),
            round(r.uniform(24, 32), 2),
            json.dumps(config),
            self.text(10, 60),
        )

    def session(self, sid: int, users: int, setups: int) -> tuple[object, ...]:
        r = self.rng
        started = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(_EPOCH + r.random() * 3e7))
        data = {
            "weather": self.text(1, 4),
            "distance_m": r.choice((18, 30, 50, 70, 90)),
            "ends": [[self.ri(0, 10) for _ in range(6)] for _ in range(self.ri(2, 6))],
        }
        return (
            sid,
            self.ri(1, users),
            self.ri(1, setups),
            started,
            self.ri(0, 720),
            self.ri(0, 144),
            self.text(0, 40),
            json.dumps(data),
        )

    def event(self, eid: int, sessions: int) -> tuple[object, ...]:
        r = self.rng
        payload = {
            "x": round(r.gauss(0, 5), 3),
            "y": round(r.gauss(0, 5), 3),
            "ring": self.ri(0, 10),
            "comment": self.text(3, 30),
        }
        return (
            eid,
            self.ri(1, sessions),
            r.choice(KINDS),
            _EPOCH + eid * 0.7 + r.random(),
            self.token(),
            json.dumps(payload),
        )


INSERT = {
    "users": "INSERT OR REPLACE INTO users VALUES (?,?,?,?,?,?)",
    "bow_setups": "INSERT OR REPLACE INTO bow_setups VALUES (?,?,?,?,?,?,?)",
    "sessions": "INSERT OR REPLACE INTO sessions VALUES (?,?,?,?,?,?,?,?)",
    "events": "INSERT OR REPLACE INTO events VALUES (?,?,?,?,?,?)",
}
# Rows per generation round, per table: events dominate the size, like a real activity log.
ROUND = {"users": 200, "bow_setups": 400, "sessions": 2_000, "events": 20_000}


def _round(conn: sqlite3.Connection, rows: Rows, counts: dict[str, int]) -> None:
    make = {
        "users": rows.user,
        "bow_setups": lambda i: rows.setup(i, counts["users"]),
        "sessions": lambda i: rows.session(i, counts["users"], counts["bow_setups"]),
        "events": lambda i: rows.event(i, counts["sessions"]),
    }
    for table, n in ROUND.items():
        start = counts[table] + 1
        counts[table] += n
        conn.executemany(INSERT[table], [make[table](i) for i in range(start, start + n)])


def generate(path: Path, *, size_bytes: int, seed: int) -> dict[str, int]:
    """Create ``path`` (must not exist) and fill it until it holds at least ``size_bytes``."""
    if path.exists():
        raise FileExistsError(path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-262144")
    conn.executescript(SCHEMA)
    rows = Rows(seed)
    counts = dict.fromkeys(ROUND, 0)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    while conn.execute("PRAGMA page_count").fetchone()[0] * page_size < size_bytes:
        conn.execute("BEGIN")
        _round(conn, rows, counts)
        conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return counts


#: Issue 16's "day of writes": 1 % of rows, all of them new (``mutate(..., **ISSUE_DAY)``).
ISSUE_DAY = {"fraction": 0.01, "rewritten": 0.0}


def mutate(
    path: Path, *, seed: int, fraction: float = 0.01, rewritten: float = 0.5
) -> dict[str, int]:
    """One day of writes: ``fraction`` of each table's rows written, ``rewritten`` of them
    existing rows (picked at random) and the rest new ones. The default rewrites half: on
    the 1 GiB database that touches 31 % of the pages. ``rewritten=0`` is issue 16's day
    (``ISSUE_DAY``): 1 % of rows, all new (an activity log grows), about 11-13 % of the
    pages (the random-token and session indexes take most)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    rows = Rows(seed)
    rng = rows.rng
    counts = {t: conn.execute(f"SELECT max(id) FROM {t}").fetchone()[0] for t in ROUND}
    make = {
        "users": rows.user,
        "bow_setups": lambda i: rows.setup(i, counts["users"]),
        "sessions": lambda i: rows.session(i, counts["users"], counts["bow_setups"]),
        "events": lambda i: rows.event(i, counts["sessions"]),
    }
    changed = {}
    conn.execute("BEGIN")
    for table, top in counts.items():
        total = max(1, int(top * fraction))
        n, added = int(total * rewritten), total - int(total * rewritten)
        if rewritten == 0.5:  # the original day: as many rewritten as added, at least one
            n = added = max(1, int(top * fraction / 2))
        ids = sorted(rng.sample(range(1, top + 1), n)) + list(range(top + 1, top + added + 1))
        conn.executemany(INSERT[table], [make[table](i) for i in ids])
        changed[table] = len(ids)
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return changed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("db", type=Path)
    ap.add_argument("--size-mib", type=float, default=1024)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--mutate", action="store_true", help="apply one day of writes instead")
    ap.add_argument("--issue-day", action="store_true", help="with --mutate: issue 16's day")
    args = ap.parse_args()
    t0 = time.monotonic()
    if args.mutate:
        day = ISSUE_DAY if args.issue_day else {}
        result = mutate(args.db, seed=args.seed, **day)
    else:
        result = generate(args.db, size_bytes=int(args.size_mib * 2**20), seed=args.seed)
    print(
        json.dumps(
            {
                "rows": result,
                "seconds": round(time.monotonic() - t0, 2),
                "bytes": args.db.stat().st_size,
            }
        )
    )


if __name__ == "__main__":
    main()
