"""The paper's headline table at a 32 KiB weight budget on CIFAR-10, with our own (short) training.

Columns: best float32, best half, best per-model float format, best int8 (per-channel scales counted),
best after format-aware fine-tuning; beside them the released float32 result (200 GPU epochs) and the
paper's four numbers. Every model goes through the real workflow (training, precision stage,
fine-tuning) on a SQLite store.

Candidates: to keep a CPU run short, the shortlist is the released model with the best accuracy in
each storage tier of the budget (float32: <= 8,192 values; half: <= 16,384; 12-bit: <= 21,845; 8-bit:
<= 32,768), plus any ``--extra`` models. The released accuracies pick the candidates; every accuracy in
the table is our own.

    python benchmarks/bench_paper_table.py --data ../shared/data/cifar10 --epochs 8 --train-images 50000

Runs can be split: ``--models``/``--extra`` choose what one run trains, ``--store`` keeps its store,
and ``--merge`` adds the results of other runs' stores to the table (``--models`` with no keys and
``--merge`` only prints the table of runs already made).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from iotnas.arch import Arch
from iotnas.formats import parse_format
from iotnas.released import load_released
from iotnas.precision.runner import PrecisionRunner
from iotnas.search import Components, Workflow
from iotnas.search.latency_sources import make_latency_source
from iotnas.search.training import TrainingEvaluator, load_study_dataset
from iotnas.store import PrecisionResult, Store
from iotnas.study import parse_study

BUDGET = 32 * 1024
TIERS = {"float32": 32, "half": 16, "12-bit": 12, "8-bit": 8}
PAPER = {"reference IoT model": 0.7064, "float32": 0.7487, "half": 0.8207, "per-model format": 0.8345}
STUDY_NAME = "paper-table"


def shortlist(released_dir: str | None) -> list[Arch]:
    models = load_released(released_dir)
    picks: list[Arch] = []
    for bits in TIERS.values():
        fits = [m for m in models if m.params * bits <= BUDGET * 8 and m.arch.key not in {p.key for p in picks}]
        picks.append(max(fits, key=lambda m: m.accuracy).arch)
    return picks


def run(archs: list[Arch], store_path: Path, args: argparse.Namespace) -> None:
    """Train, evaluate in every format and fine-tune ``archs`` through the real workflow."""
    study = parse_study({
        "name": STUDY_NAME, "store": str(store_path),
        "data": {"dataset": str(Path(args.data).resolve()), "limit": args.train_images},
        "device": {"kind": "local"}, "constraints": {"max_weight_bytes": BUDGET},
        "formats": ["float32", "half", "bfloat16", "e4m3", "int8"],
        "strategy": {"name": "laws"}, "budget": {"trainings": len(archs), "epochs": [args.epochs]},
        "precision": {"grid": True, "exp_bits": [3, 5], "man_bits": [1, 7], "tolerance": 0.01,
                      "finetune_epochs": args.finetune_epochs, "finetune_top": args.finetune_top,
                      "finetune_formats": ["e4m3", "int8"]},
    })
    dataset = load_study_dataset(study)
    components = Components(pool=archs, evaluator=TrainingEvaluator(study, dataset),
                            latency=make_latency_source(study, dataset), precision=PrecisionRunner(study, dataset))
    started = time.perf_counter()
    with Store.open(study.store, study_name=study.name, fingerprint=study.fingerprint) as store:
        Workflow(study, store, components, callbacks=[_log]).run()
        store.set_meta("bench_minutes", f"{(time.perf_counter() - started) / 60:.1f}")


def read(store_path: Path) -> tuple[list[PrecisionResult], str, str]:
    """(precision results, models trained, minutes) of one run's store."""
    with Store.open(str(store_path), study_name=STUDY_NAME, create=False) as store:
        keys = sorted({t.arch_key for t in store.trainings(status="done")})
        return store.precision_results(), ", ".join(keys), store.meta().get("bench_minutes", "?")


def table(results: list[PrecisionResult], released_dir: str | None) -> list[str]:
    def best(select) -> str:
        fits = [r for r in results if select(r) and r.weight_bytes <= BUDGET]
        if not fits:
            return "-"
        top = max(fits, key=lambda r: (r.accuracy, -r.weight_bytes))  # ties: fewer bytes
        return f"{top.accuracy:.2%} ({top.arch_key}, {top.format_name}, {top.weight_bytes} B)"

    float32, half = parse_format("float32").name, parse_format("half").name
    rows = {
        "float32": best(lambda r: r.format_name == float32 and not r.finetuned),
        "half": best(lambda r: r.format_name == half and not r.finetuned),
        "per-model float format": best(lambda r: not r.format_name.startswith("int") and not r.finetuned),
        "int8 (scales counted)": best(lambda r: r.format_name == "int8" and not r.finetuned),
        "best overall, with format-aware fine-tuning": best(lambda r: True),
    }
    fits32 = [m for m in load_released(released_dir) if m.params * 4 <= BUDGET]
    paper = {"float32": PAPER["float32"], "half": PAPER["half"], "per-model float format": PAPER["per-model format"]}
    lines = ["| column | ours (short CPU training) | paper |", "|---|---|---|",
             f"| released float32 (200 GPU epochs), best <= 32 KiB | "
             f"{max(m.accuracy for m in fits32):.2%} | {PAPER['float32']:.2%} |"]
    for name, value in rows.items():
        lines.append(f"| {name} | {value} | {paper.get(name, float('nan')):.2%} |".replace("nan%", "-"))
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/cifar10")
    parser.add_argument("--released", default=None)
    parser.add_argument("--epochs", type=float, default=8.0)
    parser.add_argument("--train-images", type=int, default=50000)
    parser.add_argument("--finetune-epochs", type=float, default=1.0)
    parser.add_argument("--finetune-top", type=int, default=2)
    parser.add_argument("--models", nargs="*", default=None, help="train these instead of the shortlist")
    parser.add_argument("--extra", nargs="*", default=[], help="train these besides the shortlist")
    parser.add_argument("--store", default=None, help="keep this run's store here (default: a temporary one)")
    parser.add_argument("--merge", nargs="*", default=[], help="stores of other runs whose results join the table")
    args = parser.parse_args()

    archs = shortlist(args.released) if args.models is None else [Arch.parse(k) for k in args.models]
    for extra in map(Arch.parse, args.extra):
        if extra.key not in {a.key for a in archs}:
            archs.append(extra)
    stores = [Path(p) for p in args.merge]
    with tempfile.TemporaryDirectory() as folder:
        if archs:
            store_path = Path(args.store) if args.store else Path(folder) / "t.db"
            run(archs, store_path, args)
            stores.insert(0, store_path)
        runs = [read(path) for path in stores]
    results = [r for rs, _, _ in runs for r in rs]
    print(f"Training budget: {args.epochs:g} epochs on the first {args.train_images} CIFAR-10 training images "
          f"(JPEG-decoded copy), test on all 10,000; fine-tuning {args.finetune_epochs:g} epoch, top "
          f"{args.finetune_top} per run. Runs: "
          + "; ".join(f"{keys} ({minutes} min)" for _, keys, minutes in runs) + ".\n")
    print("\n".join(table(results, args.released)))
    return 0


def _log(event) -> None:
    if event.stage in ("train", "precision") and event.detail is None:
        print(f"  [{time.strftime('%H:%M:%S')}] {event.message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
