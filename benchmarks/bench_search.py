"""Strategies compared in tabular mode: trainings needed to find the best feasible released model.

Every run goes through the real workflow (pool, costing, latency, proposals) on an
in-memory store, with the released 1,617 models answering instead of training.
Baseline: random search over the same feasible pool, in the same run.

    python benchmarks/bench_search.py [--seeds 50] [--released ../shared/data/iotnets]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

from iotnas.cost import cost
from iotnas.search import Components, Workflow
from iotnas.search.tabular import ReleasedLatency, ReleasedSet, TabularOracle
from iotnas.store import Store
from iotnas.strategies import STRATEGY_NAMES
from iotnas.study import parse_study

BUDGETS = {
    "32 KiB float32": {"max_weight_bytes": 32 * 1024},
    "64 KiB float32": {"max_weight_bytes": 64 * 1024},
    "Pi <= 10 ms": {"max_latency_ms": 10.0},
    "Pi <= 20 ms": {"max_latency_ms": 20.0},
    "64 KiB and Pi <= 20 ms": {"max_weight_bytes": 64 * 1024, "max_latency_ms": 20.0},
}
CHECKPOINTS = (10, 20, 50)


def feasible_best(released: ReleasedSet, limits: dict) -> tuple[str, float, int]:
    """The best feasible released model, straight from the data (the target of every run)."""
    pool = [
        m for m in released.models
        if m.params * 4 <= limits.get("max_weight_bytes", float("inf"))
        and m.latency_ms <= limits.get("max_latency_ms", float("inf"))
    ]
    best = max(pool, key=lambda m: m.accuracy)
    return best.arch.key, best.accuracy, len(pool)


def run_once(strategy: str, seed: int, limits: dict, released: ReleasedSet, cached_cost, target: float) -> list[float]:
    """Accuracies of the trained models in proposal order, until the target is found."""
    study = parse_study({
        "name": f"bench-{strategy}-{seed}", "mode": "tabular", "seed": seed, "constraints": limits,
        "strategy": {"name": strategy}, "budget": {"trainings": 2000},
    })
    components = Components(pool=released.archs(), evaluator=TabularOracle(released),
                            latency=ReleasedLatency(released), cost=cached_cost)
    found = lambda history: any(o.accuracy is not None and o.accuracy >= target for o in history)  # noqa: E731
    with Store.open("sqlite://") as store:
        workflow = Workflow(study, store, components, stop=found)
        workflow.run()
        order = [c.key for c in store.proposals()]
        accuracy = {t.arch_key: t.accuracy for t in store.trainings(status="done")}
    return [accuracy[k] for k in order if k in accuracy]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--released", type=Path, default=None)
    parser.add_argument("--strategies", default=",".join(STRATEGY_NAMES))
    args = parser.parse_args()
    released = ReleasedSet.load(args.released)

    started = time.perf_counter()
    cached_cost = functools.cache(cost)
    for arch in released.archs():
        cached_cost(arch)
    print(f"costed {len(released.models)} released models in {time.perf_counter() - started:.0f} s", file=sys.stderr)

    strategies = args.strategies.split(",")
    print("| budget | feasible | best (released) | strategy | seeds | trainings to best: median | p90 | "
          + " | ".join(f"best acc @{k}" for k in CHECKPOINTS) + " | vs random (median) |")
    print("|---|---|---|---|---|---|---|" + "---|" * len(CHECKPOINTS) + "---|")
    for budget, limits in BUDGETS.items():
        key, best, n_feasible = feasible_best(released, limits)
        medians: dict[str, float] = {}
        for strategy in strategies:
            seeds = [0] if strategy == "laws" else range(args.seeds)  # laws is deterministic
            needed, at = [], {k: [] for k in CHECKPOINTS}
            t0 = time.perf_counter()
            for seed in seeds:
                accs = run_once(strategy, seed, limits, released, cached_cost, best)
                needed.append(next(i for i, a in enumerate(accs, 1) if a >= best))
                for k in CHECKPOINTS:
                    at[k].append(max(accs[:k]))
            medians[strategy] = statistics.median(needed)
            p90 = sorted(needed)[max(0, int(round(0.9 * len(needed))) - 1)]
            ratio = medians[strategy] / medians["random"] if "random" in medians else float("nan")
            print(f"| {budget} | {n_feasible} | {key} {best:.2%} | {strategy} | {len(seeds)} | "
                  f"{medians[strategy]:g} | {p90} | "
                  + " | ".join(f"{statistics.mean(at[k]):.2%}" for k in CHECKPOINTS)
                  + f" | {ratio:.2f} |", flush=True)
            print(f"  {budget} / {strategy}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
