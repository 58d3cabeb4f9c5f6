#!/usr/bin/env python3
"""What SQLite alone charges the audit appender, a record at a time, outside the server.

A replica of the appender's SQLite work (the schema read from the store's migrations 0002
and 0007, WAL, synchronous=FULL): commits of BATCH read-shaped records over 300 patients,
each record one `audit_log` row and one recent patient-index row, the head row updated, and
every MERGE records the recent rows moved into `audit_subjects` in patient order (as
`portico_store::audit::MERGE_RECENT`). Prints the process's CPU time per record (and the
merge statements' share, without the commit's WAL writes they cause); the figure includes
Python's own work, so compare variants with each other, not with the server. See
ARCHITECTURE.md ("Where it goes, thread by thread").

    bench/audit_sqlite_replica.py [VARIANT[,VARIANT…]] [RECORDS] [BATCH]

Variants (comma-separated; default `base`):
    base        the schema as it is
    nomerge     never merge the recent rows
    nosub       no patient-index rows at all
    noidx       no `audit_log_ts` / `audit_log_actor` indexes
    wr          `audit_subjects` WITHOUT ROWID
    noseqidx    no `audit_subjects_seq` index
    keep        the merge copies the recent rows and leaves them (no DELETE)
Environment: MERGE (default 8192), RECORD_BYTES (cut each record's text to this many
bytes), DB (scratch file, default under the system temp dir; removed first).
"""
import os
import random
import resource
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

variants = set((sys.argv[1] if len(sys.argv) > 1 else "base").split(","))
records = int(sys.argv[2]) if len(sys.argv) > 2 else 120_000
batch = int(sys.argv[3]) if len(sys.argv) > 3 else 150
merge_every = int(os.environ.get("MERGE", "8192"))
record_bytes = int(os.environ.get("RECORD_BYTES", "0")) or None
path = os.environ.get("DB") or os.path.join(tempfile.gettempdir(), "portico-audit-replica.db")
known = {"base", "nomerge", "nosub", "noidx", "wr", "noseqidx", "keep"}
if not variants <= known or records < 1 or batch < 1 or merge_every < 1:
    sys.exit(f"usage: {sys.argv[0]} [VARIANT[,…]] [RECORDS] [BATCH]; variants: {', '.join(sorted(known))}")

for suffix in ("", "-wal", "-shm"):
    try:
        os.remove(path + suffix)
    except FileNotFoundError:
        pass
db = sqlite3.connect(path, isolation_level=None)
db.execute("PRAGMA journal_mode = WAL")
db.execute("PRAGMA synchronous = FULL")
# The schema from the store's own migrations, then each variant's change to it.
MIGRATIONS = Path(__file__).resolve().parent.parent / "crates" / "store" / "src" / "migrations"
for name in ("sqlite_0002_audit.sql", "sqlite_0007_audit_recent.sql"):
    db.executescript((MIGRATIONS / name).read_text())
if "noidx" in variants:
    db.executescript("DROP INDEX audit_log_ts; DROP INDEX audit_log_actor;")
if "wr" in variants:
    db.executescript(
        "DROP TABLE audit_subjects; CREATE TABLE audit_subjects (seq INTEGER NOT NULL, patient TEXT NOT NULL, "
        "category TEXT NOT NULL, PRIMARY KEY (patient, category, seq)) WITHOUT ROWID;"
        "CREATE INDEX audit_subjects_seq ON audit_subjects (seq, patient, category);"
    )
if "noseqidx" in variants:
    db.execute("DROP INDEX audit_subjects_seq")

# The shape of a stored read record (canonical text as `portico_audit::canonical` writes it).
RECORD = (
    '{"v":1,"seq":%d,"t":1795944862754,"rid":"eef2d464-39fc-44dd-b6f3-da6deec6a642","i":"read",'
    '"o":"success","st":200,"actor":{"kind":"operator","id":"operator"},"src":"127.0.0.1",'
    '"type":"Patient","ent":[{"ref":"Patient/pt-%05d/_history/1","role":"target","cat":"demographics",'
    '"pat":["pt-%05d"]}],"pat":["pt-%05d"],"rules":["operator"]}'
)
HEX = "ab" * 32
rng = random.Random(7)
seq = 0
merge_cpu = 0.0
before = resource.getrusage(resource.RUSAGE_SELF)
started = time.monotonic()
while seq < records:
    db.execute("BEGIN IMMEDIATE")
    first = db.execute("SELECT seq FROM audit_head WHERE id = 1").fetchone()[0]
    rows, subjects = [], []
    for _ in range(min(batch, records - seq)):
        seq += 1
        p = rng.randint(1, 300)
        text = (RECORD % (seq, p, p, p))[:record_bytes]
        rows.append((seq, 1795944862754 + seq, "read", "R", "success", "operator/operator", "", text, HEX, HEX))
        if "nosub" not in variants:
            subjects.append((seq, "pt-%05d" % p, "demographics"))
    db.executemany("INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    db.executemany("INSERT INTO audit_subjects_recent VALUES (?, ?, ?)", subjects)
    db.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (seq, HEX))
    upto = seq - seq % merge_every
    if upto > first and "nomerge" not in variants:
        merge_started = time.process_time()
        db.execute(
            "INSERT INTO audit_subjects (seq, patient, category) SELECT seq, patient, category "
            "FROM audit_subjects_recent WHERE seq <= ? AND seq > ? ORDER BY patient, category, seq",
            (upto, upto - merge_every if "keep" in variants else -1),
        )
        if "keep" not in variants:
            db.execute("DELETE FROM audit_subjects_recent WHERE seq <= ?", (upto,))
        merge_cpu += time.process_time() - merge_started
    db.execute("COMMIT")
after = resource.getrusage(resource.RUSAGE_SELF)
user = (after.ru_utime - before.ru_utime) / records * 1e6
system = (after.ru_stime - before.ru_stime) / records * 1e6
print(
    f"{','.join(sorted(variants))}: {records} records in commits of {batch}, merge every {merge_every}: "
    f"{user + system:.1f} us of CPU a record (user {user:.1f}, system {system:.1f}; "
    f"the merge statements {merge_cpu / records * 1e6:.1f}), "
    f"{time.monotonic() - started:.1f} s"
)
db.close()
for suffix in ("", "-wal", "-shm"):
    try:
        os.remove(path + suffix)
    except FileNotFoundError:
        pass
