"""Results: one feasibility rule, study points, fronts over them, and the winners."""

import pytest

from iotnas.results.fronts import front_mask, front_ranks
from iotnas.results.limits import Limits, Measured, Reason
from iotnas.results.points import ModelPoint
from iotnas.results.winners import WinnerRule, winners


def _point(key, fmt, acc, nbytes, lat, feasible=True, *, epochs=1.0, from_precision=False, chance_level=False):
    space, law, i = key.split("/")
    return ModelPoint(key=key, space=space, law=law, arch_id=int(i), format_name=fmt, bits=32 if fmt == "float32" else 8,
                      accuracy=acc, weight_bytes=nbytes, latency_ms=lat, n_values=nbytes, macs=0, flops=0,
                      peak_activation_bytes=0, epochs=epochs, finetuned=False, feasible=feasible, reason=None,
                      from_precision=from_precision, chance_level=chance_level)


def test_model_fronts_per_format_and_across_formats():
    pts = [
        _point("a/s1/0", "float32", 0.90, 4000, 10.0),
        _point("a/s1/0", "e4m3", 0.89, 1000, 10.0),
        _point("a/s1/1", "float32", 0.80, 2000, 5.0),
        _point("a/s1/1", "e4m3", 0.70, 500, 5.0),
        _point("a/s1/2", "float32", 0.95, 8000, None),  # never timed
        _point("a/s1/3", "float32", 0.85, 3000, 20.0, feasible=False),
    ]
    lat = front_mask(pts, ("accuracy", "latency_ms"))
    assert lat.tolist() == [True, False, True, False, False, False]
    assert front_mask(pts, ("accuracy", "latency_ms"), per_format=True).tolist() == [
        True, True, True, True, False, False]
    mem = front_mask(pts, ("accuracy", "weight_bytes"))
    assert mem.tolist() == [True, True, False, True, True, False]
    mem_f32 = front_mask(pts, ("accuracy", "weight_bytes"), per_format=True)
    assert mem_f32.tolist() == [True, True, True, True, True, True]
    feasible = front_mask(pts, ("accuracy", "weight_bytes"), per_format=True, feasible_only=True)
    assert feasible.tolist() == [True, True, True, True, True, False]
    three = front_mask(pts, ("accuracy", "weight_bytes", "latency_ms"))
    assert three.tolist() == [True, True, True, True, False, False]
    assert front_ranks(pts, ("accuracy", "latency_ms")).tolist() == [0, 1, 0, 1, -1, 2]
    with pytest.raises(ValueError, match="unknown objective"):
        front_mask(pts, ("accuracy", "energy"))


def test_limits_explain_violations_in_one_vocabulary():
    limits = Limits(max_weight_bytes=1000, max_latency_ms=5.0, max_activation_bytes=100)
    assert limits.violations(Measured(1000, 5.0, 100)) == []
    why = limits.violations(Measured(weight_bytes=1001, latency_ms=None, peak_activation_bytes=101))
    assert [v.reason for v in why] == [Reason.MEMORY, Reason.UNTIMED, Reason.ACTIVATIONS]
    assert [str(v) for v in why] == ["1001 weight bytes > 1000", "no latency figure", "101 peak activation bytes > 100"]
    assert limits.violations(Measured(latency_ms=5.5))[0].message == "5.500 ms > 5.0 ms"
    # the pool knows no latency yet: it asks only about memory
    assert limits.violations(Measured(weight_bytes=1001), checks={Reason.MEMORY, Reason.ACTIVATIONS})[0].reason \
        is Reason.MEMORY
    assert Limits().violations(Measured(10**9, 10**9, 10**9)) == []
    assert Reason.MEMORY.status == "rejected:memory" and Reason.LATENCY.status == "rejected:latency"


def test_winners_respect_feasibility_and_prefer_fewer_bytes_on_ties():
    pts = [
        _point("a/s1/0", "float32", 0.80, 4000, 1.0, feasible=False, from_precision=True),
        _point("a/s1/0", "half", 0.80, 2000, 1.0, from_precision=True),
        _point("a/s1/0", "e4m3", 0.70, 1000, 1.0, from_precision=True),
        _point("a/s1/1", "float32", 0.90, 8000, 1.0, feasible=False, from_precision=True),
        _point("a/s1/1", "e4m3", 0.85, 2000, 1.0, from_precision=True),
        _point("a/s1/2", "float32", 0.99, 500, 1.0),  # trained, but never through the precision stage
    ]
    assert [(p.key, p.format_name) for p in winners(pts)] == [("a/s1/1", "e4m3"), ("a/s1/0", "half")]
    assert winners(pts, rule=WinnerRule("most_accurate")) == winners(pts)  # no pair within 1 point of another
    # before the precision stage, every trained model competes; higher fidelities first
    early = [_point("a/s1/0", "float32", 0.7, 10, 1.0, epochs=3.0), _point("a/s1/1", "float32", 0.9, 10, 1.0)]
    assert [p.key for p in winners(early)] == ["a/s1/0", "a/s1/1"]
    assert winners([_point("a/s1/0", "float32", 0.9, 10, 1.0, feasible=False)]) == []


def _pairs(points):
    return [(p.key, p.format_name) for p in points]


def test_winner_rules_on_hand_made_results():
    """e5m3 beats e4m3 by two test images in 10,000: within tolerance, the narrower format wins."""
    pts = [
        _point("a/s1/0", "float32", 0.7980, 16000, 1.0, from_precision=True),
        _point("a/s1/0", "e5m3", 0.7977, 4500, 1.0, from_precision=True),
        _point("a/s1/0", "e4m3", 0.7975, 4000, 1.0, from_precision=True),
        _point("a/s1/0", "e3m2", 0.7000, 3000, 1.0, from_precision=True),  # lost too much
        _point("a/s1/1", "float32", 0.7900, 8000, 1.0, from_precision=True),
        _point("a/s1/1", "int8", 0.7890, 2100, 1.0, from_precision=True),  # within 1 point of the best: wins
        _point("a/s1/2", "float32", 0.7500, 4000, 1.0, from_precision=True),
        _point("a/s1/2", "e4m3", 0.7450, 1000, 1.0, from_precision=True),  # smallest, but 5 points behind
    ]
    fewest = winners(pts, rule=WinnerRule("fewest_bytes", 0.01))
    assert _pairs(fewest) == [("a/s1/1", "int8"), ("a/s1/0", "e4m3"), ("a/s1/2", "e4m3")]
    accurate = winners(pts, rule=WinnerRule("most_accurate", 0.01))
    assert _pairs(accurate) == [("a/s1/0", "float32"), ("a/s1/1", "float32"), ("a/s1/2", "float32")]
    # a tolerance of zero: only the most accurate figure qualifies, and the rule agrees with most_accurate
    assert _pairs(winners(pts, rule=WinnerRule("fewest_bytes", 0.0)))[0] == ("a/s1/0", "float32")
    # a wider one lets the smallest model in, with its own narrowest format within tolerance of its best
    assert _pairs(winners(pts, rule=WinnerRule("fewest_bytes", 0.06)))[0] == ("a/s1/2", "e4m3")
    # accuracy ties: fewer bytes under either rule
    tie = [_point("a/s1/0", "half", 0.9, 2000, 1.0), _point("a/s1/0", "e4m3", 0.9, 1000, 1.0)]
    for pick in ("fewest_bytes", "most_accurate"):
        assert _pairs(winners(tie, rule=WinnerRule(pick)))[0] == ("a/s1/0", "e4m3")


def test_the_study_names_its_winner_rule():
    from iotnas.errors import ConfigError
    from iotnas.study import parse_study

    assert WinnerRule.of(parse_study({"name": "s"})) == WinnerRule("fewest_bytes", 0.01)
    study = parse_study({"name": "s", "precision": {"winner": "most_accurate", "tolerance": 0.02}})
    assert WinnerRule.of(study) == WinnerRule("most_accurate", 0.02)
    with pytest.raises(ConfigError, match="precision.winner: 'smallest' is not one of fewest_bytes, most_accurate"):
        parse_study({"name": "s", "precision": {"winner": "smallest"}})


def test_chance_level_points_are_kept_off_fronts_and_winners():
    pts = [
        _point("a/s1/0", "float32", 0.95, 4000, 1.0),
        _point("a/s1/1", "float32", 0.10, 100, 0.1, chance_level=True),  # smallest and fastest, learned nothing
        _point("a/s1/2", "float32", 0.60, 1000, 0.5),
    ]
    for objectives in (("accuracy", "latency_ms"), ("accuracy", "weight_bytes")):
        assert front_mask(pts, objectives).tolist() == [True, False, True]
        assert front_mask(pts, objectives, feasible_only=True, per_format=True).tolist() == [True, False, True]
        assert front_ranks(pts, objectives).tolist() == [0, -1, 0]
    for pick in ("fewest_bytes", "most_accurate"):
        assert [p.key for p in winners(pts, rule=WinnerRule(pick, 0.5))] == ["a/s1/2", "a/s1/0"][
            :: 1 if pick == "fewest_bytes" else -1]
    assert winners([pts[1]]) == []


def test_winners_bytes_are_those_of_the_format_they_name(tmp_path):
    """Before the precision stage a winner is its float32 training: its bytes are float32's, whatever the
    narrowest study format; after it, an int8 winner's bytes count the scales."""
    from datetime import datetime

    from iotnas.results.winners import summarize
    from iotnas.store import FEASIBLE, Candidate, PrecisionResult, Store
    from iotnas.study import parse_study

    study = parse_study({"name": "w", "formats": ["float32", "int8"]})
    with Store.open(str(tmp_path / "w.db"), study_name="w") as store:
        store.set_study(study)
        store.add_candidates([Candidate(key="densenet/s3/1", arch_json="{}", space="densenet", law="s3", arch_id=1,
                                        n_values=1000, macs=1, flops=1, peak_activation_bytes=10, status=FEASIBLE,
                                        reason=None, proposed_index=0)])
        assert store.claim_training("densenet/s3/1", 1.0, worker="w", stale_before=datetime.min)
        store.finish_training("densenet/s3/1", 1.0, accuracy=0.5, checkpoint=None, seconds=1.0)
        (early,) = summarize(store).best
        assert (early.format_name, early.weight_bytes) == ("float32", 4000)
        store.add_precision(PrecisionResult("densenet/s3/1", 1.0, "int8", 8, 1000 + 64, 0.55, False, None))
        (late,) = summarize(store).best
        assert (late.format_name, late.weight_bytes) == ("int8", 1064)


def test_chance_level_rule_scales_with_the_number_of_classes():
    from iotnas.results import chance_ceiling, is_chance_level

    assert is_chance_level(0.10, 10) and is_chance_level(0.17, 10)
    assert not is_chance_level(0.20, 10)
    assert is_chance_level(0.54, 2) and not is_chance_level(0.56, 2)
    assert chance_ceiling(100) < 0.11
    assert not is_chance_level(None, 10) and not is_chance_level(0.1, None)
