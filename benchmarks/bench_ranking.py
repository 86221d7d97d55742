"""Do low fidelities rank? Spearman correlation between a 1-epoch rung and a long training.

Draws ``--models`` networks of mixed families (ids 0.. of each law, kept when their values fall
between ``--min-values`` and ``--max-values``), trains each for ``--rung`` epochs under the
previous recipe (a fixed one-epoch warm-up) and under the current one (a warm-up that is a
fraction of the budget), and for ``--final`` epochs under the current recipe: the reference
ranking. Prints Spearman's rho (SciPy) of each rung against the reference, over the same models.
Every training is kept in ``--results`` (JSON) and skipped when the command is run again, so a
long run spans sessions. Trainings run where :func:`iotnas.train.train` puts them (a GPU when
present); ``--shard K/N`` runs every N-th training only, so N processes can share one machine,
each with its own results file, and ``--merge`` joins those files before the table is printed.

    python benchmarks/bench_ranking.py --models 12 --images 10000 --rung 1 --final 8 \
        --results runs/ranking.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch
from scipy.stats import spearmanr

from iotnas.arch import Arch
from iotnas.cost import cost
from iotnas.data import load_dataset
from iotnas.errors import InvalidSampleError
from iotnas.spaces import build, get_space, list_spaces
from iotnas.train import TrainConfig, train

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"
RECIPES = {"previous": {"warmup_epochs": 1.0}, "current": {}}


def pick_models(n: int, lo: int, hi: int) -> list[str]:
    """Up to ``n`` keys, round-robin over every law of every family, with lo..hi values."""
    laws = [(space, law) for space in list_spaces() for law in get_space(space).laws]
    chosen: list[str] = []
    for i in range(40):
        for space, law in laws:
            key = Arch(space=space, law=law, id=i).key
            try:
                values = cost(key, num_classes=10, in_channels=3).n_values
            except InvalidSampleError:  # an id that cannot run: skipped, as the pool does
                continue
            if lo <= values <= hi and key not in chosen:
                chosen.append(key)
                if len(chosen) == n:
                    return chosen
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--models", type=int, default=12)
    parser.add_argument("--images", type=int, default=10_000, help="training images (the test split is whole)")
    parser.add_argument("--rung", type=float, default=1.0)
    parser.add_argument("--final", type=float, default=8.0)
    parser.add_argument("--min-values", type=int, default=4_000)
    parser.add_argument("--max-values", type=int, default=40_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results", default="runs/ranking.json")
    parser.add_argument("--shard", default="0/1", help="K/N: run only the trainings j with j %% N == K")
    parser.add_argument("--merge", nargs="*", default=[], help="results files of shards, joined into --results")
    args = parser.parse_args()
    try:
        shard, shards = (int(x) for x in args.shard.split("/"))
    except ValueError:
        parser.error(f"--shard: expected K/N with 0 <= K < N, e.g. 0/4; got {args.shard!r}")
    if not 0 <= shard < shards:
        parser.error(f"--shard: expected K/N with 0 <= K < N, e.g. 0/4; got {args.shard!r}")
    dataset = load_dataset(args.data, verify=False).subset(train=args.images)
    results_file = Path(args.results)
    results_file.parent.mkdir(parents=True, exist_ok=True)
    done = json.loads(results_file.read_text()) if results_file.is_file() else {}
    for part in args.merge:
        done.update(json.loads(Path(part).read_text()))
    keys = pick_models(args.models, args.min_values, args.max_values)
    load = os.getloadavg()[0]
    where = torch.cuda.get_device_name() if torch.cuda.is_available() else f"{args.threads} CPU thread(s)"
    print(f"Ranking, {len(keys)} models, {args.images} CIFAR-10 train images, full test split; "
          f"{platform.machine()}, torch {torch.__version__}, {where}, load {load:.1f}\n", flush=True)
    jobs = [(key, name, args.rung) for key in keys for name in RECIPES] + [(key, "current", args.final) for key in keys]
    for j, (key, name, epochs) in enumerate(jobs):
        cell = f"{key} | {name} | {epochs:g}"
        if cell in done or j % shards != shard:
            continue
        torch.manual_seed(0)
        model = build(Arch.parse(key), num_classes=10, in_channels=3, seed=0)
        config = TrainConfig(epochs=epochs, threads=args.threads, **RECIPES[name])
        result = train(model, dataset, config, seed=0)
        done[cell] = {"accuracy": result.test_accuracy, "minutes": result.seconds / 60, "load": os.getloadavg()[0]}
        results_file.write_text(json.dumps(done, indent=1))
        print(f"{cell}: {result.test_accuracy:.2%} ({result.seconds / 60:.1f} min)", flush=True)
    if args.merge:
        results_file.write_text(json.dumps(done, indent=1))
    if any(f"{key} | {name} | {epochs:g}" not in done for key, name, epochs in jobs):
        print("\n(some trainings belong to other shards; run with --merge to print the table)")
        return
    final = [done[f"{k} | current | {args.final:g}"]["accuracy"] for k in keys]
    print(f"\n| model | previous, {args.rung:g} ep | current, {args.rung:g} ep | current, {args.final:g} ep |")
    print("| --- | ---: | ---: | ---: |")
    for k, f in zip(keys, final):
        prev, cur = (done[f"{k} | {n} | {args.rung:g}"]["accuracy"] for n in RECIPES)
        print(f"| {k} | {prev:.2%} | {cur:.2%} | {f:.2%} |")
    print(f"\n| rung recipe | Spearman rho vs {args.final:g} epochs | p |")
    print("| --- | ---: | ---: |")
    for name in RECIPES:
        rung = [done[f"{k} | {name} | {args.rung:g}"]["accuracy"] for k in keys]
        rho, p = spearmanr(rung, final)
        print(f"| {name} | {rho:.3f} | {p:.3f} |")


if __name__ == "__main__":
    main()
