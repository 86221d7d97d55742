"""Several workers on one study: wall time with 1, 2 and 4 workers, and the store's claim/commit overhead.

Part 1 runs the same small train-mode study (embedded digits, 8 trainings) with 1, 2 and 4 workers,
as local processes and as Ray tasks. Part 2 times claiming a proposal, claiming its training and
committing the result, per candidate, on a SQLite file and on PostgreSQL (give --postgres URL).

    python benchmarks/bench_scale.py [--postgres postgresql+psycopg://user@127.0.0.1:5432/db]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from iotnas.executors import make_executor
from iotnas.search import prepare_search
from iotnas.store import POOLED, Candidate, Store
from iotnas.study import load_study

STUDY = """\
name = "scale"
seed = 1
store = "scale.db"
[data]
dataset = "digits"
[device]
kind = "local"
[constraints]
max_weight_bytes = 16384
[space]
laws = ["probenet/s2", "mobilenetv2/s6"]
pool_per_law = 12
[strategy]
name = "random"
[budget]
trainings = 8
epochs = [4]
[training]
batch_size = 64
threads = 1
"""


def study_wall_time(executor: str, workers: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        study_file = Path(folder) / "scale.toml"
        study_file.write_text(STUDY)
        study = load_study(study_file)
        url = f"sqlite:///{Path(folder) / 'scale.db'}"
        prepare_search(study, store_url=url)  # pool and costs, outside the timing
        started = time.perf_counter()
        make_executor(executor).run(study, url, workers=workers)
        return time.perf_counter() - started


def claim_overhead_ms(url: str, n: int = 200) -> float:
    """Milliseconds per candidate for: claim a proposal, claim its training, commit its result."""
    with Store.open(url, study_name="bench", fingerprint="x") as store:
        store.add_candidates([
            Candidate(key=f"c{i}", arch_json="{}", space="probenet", law="s2", arch_id=i, n_values=1, macs=1,
                      flops=1, peak_activation_bytes=1, status=POOLED, reason=None, proposed_index=None)
            for i in range(n)
        ])
        stale = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(seconds=60)
        started = time.perf_counter()
        for i in range(n):
            store.claim_proposal(f"c{i}")
            store.claim_training(f"c{i}", 1.0, worker="bench", stale_before=stale)
            store.finish_training(f"c{i}", 1.0, accuracy=0.5, checkpoint=None, seconds=0.0)
        return (time.perf_counter() - started) / n * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default=None, help="an empty PostgreSQL database URL")
    parser.add_argument("--executors", default="local,ray")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores\n")
    print("| executor | workers | wall s (8 trainings) | speed-up vs 1 worker |")
    print("|---|---|---|---|")
    for executor in args.executors.split(","):
        base = None
        for workers in (1, 2, 4):
            wall = study_wall_time(executor, workers)
            base = base or wall
            print(f"| {executor} | {workers} | {wall:.1f} | {base / wall:.2f} |", flush=True)
    print("\n| store | ms per candidate (claim proposal + claim training + commit) |")
    print("|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        print(f"| SQLite (file, WAL) | {claim_overhead_ms(f'sqlite:///{folder}/claims.db'):.2f} |")
    if args.postgres:
        print(f"| PostgreSQL (127.0.0.1) | {claim_overhead_ms(args.postgres):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
