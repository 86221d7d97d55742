"""The hybrid device mode: a predictor screens the pool, the device measures what it cannot decide."""

from __future__ import annotations

import pytest

from iotnas.arch import Arch
from iotnas.cost import cost
from iotnas.errors import ConfigError
from iotnas.latency.api import measure_many
from iotnas.latency.measure import Protocol
from iotnas.latency.predictor import DEFAULT_INPUT, FlopsPredictor, InputShape
from iotnas.search import run_search
from iotnas.store import Store
from iotnas.study import parse_study

LAW = "probenet/s2"
POOL = 6
#: Short, still the real protocol: the test checks decisions, never speed.
FAST = Protocol(warmup_runs=2, warmup_s=0.0, min_runs=10, min_s=0.0, max_s=2.0)


def _study(folder, *, limit_ms: float, measure: str, margin: float, name: str, trainings: int = 3,
           predictor: str = "flops.json") -> dict:
    return {
        "name": name, "seed": 0, "store": str(folder / f"{name}.db"),
        "data": {"dataset": "digits", "limit": 512},
        "device": {"kind": "local", "predictor": str(folder / predictor), "measure": measure, "margin": margin,
                   "min_s": 0.05},
        "constraints": {"max_latency_ms": limit_ms},
        "space": {"laws": [LAW], "pool_per_law": POOL},
        "strategy": {"name": "laws"},
        "budget": {"trainings": trainings, "epochs": [3]},  # enough to learn: chance-level models are on no front
        "training": {"batch_size": 64},
    }


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    """A FLOPs line fitted on the pool's own networks, timed on this machine; its predictions for the pool."""
    folder = tmp_path_factory.mktemp("hybrid")
    keys = [f"{LAW}/{i}" for i in range(POOL)]
    timed = measure_many(keys, protocol=FAST, in_channels=1)
    flops = [cost(key, num_classes=10, in_channels=1).flops for key in keys]
    line = FlopsPredictor.fit(flops, [m.median_ms for m in timed]).with_input(InputShape(channels=1))  # digits: grey
    line.save(folder / "flops.json")
    return folder, {key: line.predict(Arch.parse(key)) for key in keys}


def _search(folder, **options):
    study = parse_study(_study(folder, **options))
    run_search(study)
    with Store.open(study.store, create=False) as store:
        latencies = store.latencies()
        trained = {t.arch_key for t in store.trainings(status="done")}
        proposed = [c.key for c in sorted(store.candidates(), key=lambda c: c.proposed_index or 0)
                    if c.proposed_index is not None]
    return latencies, trained, proposed


def _report(folder, name: str) -> str:
    from iotnas.report import render_report

    with Store.open(str(folder / f"{name}.db"), create=False) as store:
        return render_report(store)


def test_a_confident_predictor_measures_fewer_candidates_than_measuring_every_proposal(predicted):
    folder, predictions = predicted
    limit = 20 * max(predictions.values())  # far above every prediction: the predictor decides them all
    undecided, trained_u, _ = _search(folder, limit_ms=limit, measure="undecided", margin=0.2, name="confident")
    every, trained_e, _ = _search(folder, limit_ms=limit, measure="every", margin=0.2, name="every")
    measured_u = {k for k, lat in undecided.items() if lat.source == "measured"}
    measured_e = {k for k, lat in every.items() if lat.source == "measured"}
    assert trained_u and trained_e
    assert measured_u == set() and trained_e <= measured_e  # every proposal measured before training
    assert len(measured_u) < len(measured_e)
    assert {lat.source for k, lat in undecided.items() if k not in measured_u} == {"predicted"}
    # The report tells predicted latencies from measured ones.
    assert "(pred.)" in _report(folder, "confident") and "(pred.)" not in _report(folder, "every")


def test_the_hybrid_mode_never_trains_a_candidate_measured_over_the_limit(predicted):
    folder, predictions = predicted
    ordered = sorted(predictions.values())
    limit = ordered[len(ordered) // 2]  # the middle prediction: several candidates near the limit
    margin = 0.5
    surely_fast = sum(ms * (1 + margin) <= limit for ms in predictions.values())
    # One training more than the prediction settles: the settled come first, then the device must decide.
    latencies, trained, _ = _search(folder, limit_ms=limit, measure="undecided", margin=margin, name="near",
                                    trainings=surely_fast + 1)
    assert trained
    for key in trained:
        lat = latencies[key]
        if lat.source == "measured":
            assert lat.median_ms <= limit, key
        else:  # trained on a prediction only when it is surely fast enough
            assert lat.source == "predicted" and lat.median_ms * (1 + margin) <= limit, key
    measured = {k for k, lat in latencies.items() if lat.source == "measured"}
    assert measured, "no candidate was close enough to the limit to be measured"
    band = {k for k, ms in predictions.items() if limit / (1 + margin) < ms < limit / (1 - margin)}
    assert measured <= band


def test_what_the_prediction_settles_is_proposed_before_what_the_device_must_measure(predicted):
    """The ids of a law are exchangeable draws: the laws strategy takes the settled ones first."""
    folder, predictions = predicted
    by_id = sorted(predictions, key=lambda key: int(key.rsplit("/", 1)[1]))
    by_prediction = sorted(predictions, key=predictions.get)

    def setting(k: int) -> tuple[float, float, list[str]]:
        """The k fastest surely fast, the next one at the limit; and the id order of what is not surely too slow."""
        limit = predictions[by_prediction[k]]
        margin = 0.99 * (limit / predictions[by_prediction[k - 1]] - 1)
        return limit, margin, [key for key in by_id if predictions[key] * (1 - margin) <= limit]

    # The fewest fastest candidates that id order would not propose first (it would measure one).
    k = next(k for k in range(1, POOL - 1) if set(by_prediction[:k]) != set(setting(k)[2][:k]))
    limit, margin, id_order = setting(k)
    assert 0 < margin < 1
    options = {"limit_ms": limit, "margin": margin, "trainings": k}
    latencies, trained, proposed = _search(folder, measure="undecided", name="ranked", **options)
    assert set(proposed) == trained == set(by_prediction[:k])
    assert {latencies[key].source for key in predictions} == {"predicted"}  # nothing needed the device
    every, _, proposed_every = _search(folder, measure="every", name="unranked", **options)
    assert proposed_every[:k] == id_order[:k] and set(id_order[:k]) != trained  # measuring all: no order is cheaper
    assert {key for key, lat in every.items() if lat.source == "measured"} >= set(proposed_every)


def test_a_predictor_calibrated_for_other_channels_is_refused_before_anything_is_stored(predicted):
    folder, _ = predicted
    FlopsPredictor.load(folder / "flops.json").with_input(DEFAULT_INPUT).save(folder / "rgb.json")
    study = parse_study(_study(folder, limit_ms=1.0, measure="undecided", margin=0.2, name="rgb",
                               predictor="rgb.json"))
    with pytest.raises(ConfigError) as refused:
        run_search(study)
    message = str(refused.value)
    assert "rgb.json" in message and "3-channel" in message and "1-channel" in message and "\n" not in message
    assert not (folder / "rgb.db").exists()
