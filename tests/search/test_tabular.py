"""The workflow end to end in tabular mode: released accuracy and Pi latency answer instead of training."""

import functools
import json

import pytest

from iotnas.cost import cost
from iotnas.errors import SearchError
from iotnas.results.points import study_points
from iotnas.search import Components, Workflow, run_search
from iotnas.search.tabular import ReleasedLatency, ReleasedSet, TabularOracle
from iotnas.store import Store
from iotnas.strategies import STRATEGY_NAMES
from iotnas.study import parse_study

LAWS = ["mobilenetv2/s4", "mobilenetv2/s6"]
cached_cost = functools.cache(cost)


@pytest.fixture(scope="module")
def released(released_dir):
    return ReleasedSet.load(released_dir)


@pytest.fixture(scope="module")
def raw_records(released_dir):
    return json.loads((released_dir / "results_RaspPi.json").read_text())


def _study(released_dir, **overrides):
    raw = {
        "name": "t", "mode": "tabular", "released": str(released_dir), "space": {"laws": LAWS},
        "constraints": {"max_weight_bytes": 32 * 1024}, "strategy": {"name": "laws"}, "budget": {"trainings": 500},
    }
    raw.update(overrides)
    return parse_study(raw)


def _components(released, study):
    wanted = {tuple(law.split("/")) for law in LAWS}
    pool = [a for a in released.archs() if (a.space, a.law) in wanted]
    return Components(pool=pool, evaluator=TabularOracle(released), latency=ReleasedLatency(released),
                      cost=cached_cost)


def _run(study, released, store_path, **kwargs):
    with Store.open(str(store_path), study_name=study.name, fingerprint=study.fingerprint) as store:
        summary = Workflow(study, store, _components(released, study), **kwargs).run()
        trained = [t.arch_key for t in store.trainings(status="done")]
        order = [c.key for c in store.proposals()]
    return summary, trained, order


def _brute_force(records, *, max_values=None, max_ms=None):
    ok = [
        r for r in records
        if f"{r['spacename'][len('random_net_'):]}/{r['law']}" in LAWS
        and (max_values is None or r["params"] <= max_values)
        and (max_ms is None or r["t_avg"] <= max_ms)
    ]
    return max(ok, key=lambda r: r["acc"]), len(ok)


def test_exhaustive_search_finds_the_brute_force_best(released, raw_records, released_dir, tmp_path):
    from iotnas.results.winners import WinnerRule, winners

    study = _study(released_dir)
    summary, trained, _ = _run(study, released, tmp_path / "s.db")
    best, n_feasible = _brute_force(raw_records, max_values=8192)
    # the default rule: fewest bytes within a point of the most accurate
    near = [r for r in raw_records if r["acc"] >= best["acc"] - 0.01 and r["params"] <= 8192
            and f"{r['spacename'][len('random_net_'):]}/{r['law']}" in LAWS]
    smallest = min(near, key=lambda r: (r["params"], -r["acc"]))
    assert summary.best[0].key == f"mobilenetv2/{smallest['law']}/{smallest['id']}"
    # the most accurate, under the other rule
    with Store.open(str(tmp_path / "s.db"), create=False) as store:
        top = winners(study_points(store), rule=WinnerRule("most_accurate"))[0]
    assert top.key == f"mobilenetv2/{best['law']}/{best['id']}"
    assert top.accuracy == pytest.approx(best["acc"])
    assert len(trained) == n_feasible  # every feasible model, each once
    # No candidate violating the memory limit was ever trained.
    assert all(cached_cost(a).n_values * 4 <= 32 * 1024 for a in released.archs() if a.key in set(trained))


def test_latency_limit_is_applied_before_training(released, raw_records, released_dir, tmp_path):
    study = _study(released_dir, constraints={"max_latency_ms": 10.0})
    summary, trained, _ = _run(study, released, tmp_path / "s.db")
    best, n_feasible = _brute_force(raw_records, max_ms=10.0)
    assert len(trained) == n_feasible
    assert best["acc"] - 0.01 <= summary.best[0].accuracy <= best["acc"]  # within the winner rule's tolerance
    slow = {f"mobilenetv2/{r['law']}/{r['id']}" for r in raw_records if r["t_avg"] > 10.0}
    assert not slow & set(trained)


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_every_strategy_proposes_distinct_feasible_models_deterministically(
    strategy, released, released_dir, tmp_path
):
    study = _study(released_dir, strategy={"name": strategy}, budget={"trainings": 8}, seed=3)
    _, trained_a, order_a = _run(study, released, tmp_path / "a.db")
    _, trained_b, order_b = _run(study, released, tmp_path / "b.db")
    assert len(trained_a) == 8 and len(set(order_a)) == len(order_a)
    assert order_a == order_b  # same seed, same proposals


def test_rerun_trains_nothing_twice_and_resumes_the_same_order(released, released_dir, tmp_path):
    study = _study(released_dir, strategy={"name": "surrogate"}, budget={"trainings": 12}, seed=1)
    _, full_trained, full_order = _run(study, released, tmp_path / "full.db")
    # Interrupt after 5 proposals, then resume in a fresh workflow: same proposals as the uninterrupted run.
    _run(study, released, tmp_path / "cut.db", stop=lambda history: len(history) >= 5)
    _, resumed_trained, resumed_order = _run(study, released, tmp_path / "cut.db")
    assert resumed_order == full_order
    assert sorted(resumed_trained) == sorted(full_trained)
    _, again, _ = _run(study, released, tmp_path / "cut.db")
    assert sorted(again) == sorted(full_trained)


def test_impossible_constraints_name_the_smallest_model(released, released_dir, tmp_path):
    study = _study(released_dir, constraints={"max_weight_bytes": 100})
    with pytest.raises(SearchError, match="no candidate satisfies the memory constraints: the smallest"):
        _run(study, released, tmp_path / "s.db")


def test_run_search_uses_the_study_store(released_dir, tmp_path):
    study = _study(released_dir, store=str(tmp_path / "x.db"), budget={"trainings": 3})
    summary = run_search(study)
    assert summary.trainings == 3
    assert (tmp_path / "x.db").exists()
