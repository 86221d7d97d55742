"""The paper's headline table at a 32 KiB weight budget on CIFAR-10, with our own (short) training.

Columns: best float32, best half, best per-model float format, best int8 (per-channel scales counted),
best after format-aware fine-tuning; beside them the released float32 result (200 GPU epochs) and the
paper's four numbers. Every model goes through the real workflow (training, precision stage,
fine-tuning) on a SQLite store.

Candidates: to keep a CPU run short, the shortlist is the released model with the best accuracy in
each storage tier of the budget (float32: <= 8,192 values; half: <= 16,384; 12-bit: <= 21,845; 8-bit:
<= 32,768). The released accuracies pick the candidates; every accuracy in the table is our own.

    python benchmarks/bench_paper_table.py --data ../shared/data/cifar10 --epochs 8 --train-images 50000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from iotnas.formats import parse_format
from iotnas.released import load_released
from iotnas.search import Components, Workflow
from iotnas.search.precision import best_pairs
from iotnas.search.training import PrecisionRunner, TrainingEvaluator, load_study_dataset, make_latency_source
from iotnas.store import Store
from iotnas.study import parse_study

BUDGET = 32 * 1024
TIERS = {"float32": 32, "half": 16, "12-bit": 12, "8-bit": 8}
PAPER = {"reference IoT model": 0.7064, "float32": 0.7487, "half": 0.8207, "per-model format": 0.8345}


def shortlist(released_dir: str | None) -> list:
    models = load_released(released_dir)
    picks = []
    for bits in TIERS.values():
        fits = [m for m in models if m.params * bits <= BUDGET * 8 and m.arch.key not in {p.key for p in picks}]
        picks.append(max(fits, key=lambda m: m.accuracy).arch)
    return picks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/cifar10")
    parser.add_argument("--released", default=None)
    parser.add_argument("--epochs", type=float, default=8.0)
    parser.add_argument("--train-images", type=int, default=50000)
    parser.add_argument("--finetune-epochs", type=float, default=1.0)
    args = parser.parse_args()

    archs = shortlist(args.released)
    released = {m.arch.key: m for m in load_released(args.released)}
    with tempfile.TemporaryDirectory() as folder:
        study = parse_study({
            "name": "paper-table", "store": str(Path(folder) / "t.db"),
            "data": {"dataset": str(Path(args.data).resolve()), "limit": args.train_images},
            "device": {"kind": "local"}, "constraints": {"max_weight_bytes": BUDGET},
            "formats": ["float32", "half", "bfloat16", "e4m3", "int8"],
            "strategy": {"name": "laws"}, "budget": {"trainings": len(archs), "epochs": [args.epochs]},
            "precision": {"grid": True, "exp_bits": [3, 5], "man_bits": [1, 7], "tolerance": 0.01,
                          "finetune_epochs": args.finetune_epochs, "finetune_top": 2,
                          "finetune_formats": ["e4m3", "int8"]},
        })
        dataset = load_study_dataset(study)
        components = Components(pool=archs, evaluator=TrainingEvaluator(study, dataset),
                                latency=make_latency_source(study, dataset), precision=PrecisionRunner(study, dataset))
        started = time.perf_counter()
        with Store.open(study.store, study_name=study.name, fingerprint=study.fingerprint) as store:
            Workflow(study, store, components, callbacks=[_log]).run()
            results = store.precision_results()
        minutes = (time.perf_counter() - started) / 60

    def best(select) -> str:
        pairs = best_pairs([r for r in results if select(r)], max_weight_bytes=BUDGET)
        return f"{pairs[0].accuracy:.2%} ({pairs[0].arch_key}, {pairs[0].format_name}, {pairs[0].weight_bytes} B)" \
            if pairs else "-"

    float32 = parse_format("float32").name
    half = parse_format("half").name
    rows = {
        "float32": best(lambda r: r.format_name == float32 and not r.finetuned),
        "half": best(lambda r: r.format_name == half and not r.finetuned),
        "per-model float format": best(lambda r: not r.format_name.startswith("int") and not r.finetuned),
        "int8 (scales counted)": best(lambda r: r.format_name == "int8" and not r.finetuned),
        "best overall, with format-aware fine-tuning": best(lambda r: True),
    }
    fits32 = [m for m in released.values() if m.params * 4 <= BUDGET]
    print(f"Training budget: {args.epochs:g} epochs on the first {args.train_images} CIFAR-10 training images "
          f"(JPEG-decoded copy), test on all 10,000; fine-tuning {args.finetune_epochs:g} epoch; "
          f"{minutes:.1f} min on this machine. Shortlist: {', '.join(a.key for a in archs)}.\n")
    print("| column | ours (short CPU training) | paper |")
    print("|---|---|---|")
    print(f"| released float32 (200 GPU epochs), best <= 32 KiB | "
          f"{max(m.accuracy for m in fits32):.2%} | {PAPER['float32']:.2%} |")
    paper = {"float32": PAPER["float32"], "half": PAPER["half"], "per-model float format": PAPER["per-model format"]}
    for name, value in rows.items():
        print(f"| {name} | {value} | {paper.get(name, float('nan')):.2%} |".replace("nan%", "-"))
    return 0


def _log(event) -> None:
    if event.stage in ("train", "precision") and event.detail is None:
        print(f"  [{time.strftime('%H:%M:%S')}] {event.message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
