"""Kernels, regression trees and predictors: fit, save, load, score, on real networks and timings."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from iotnas.errors import LatencyError
from iotnas.latency._trees import fit_boosted_trees, predict_boosted_trees
from iotnas.latency.calibrate import (
    ReleasedTiming,
    calibrate,
    cross_validate_released,
    released_records,
    released_repeats,
    released_timings,
    repeat_score,
    sample_archs,
)
from iotnas.latency.kernels import Kernel, arch_kernels, trace_kernels
from iotnas.latency.predictor import (
    DEFAULT_INPUT,
    PREDICTORS,
    CostModelPredictor,
    FlopsPredictor,
    InputShape,
    KernelPredictor,
    LatencyPredictor,
    NodePredictor,
    OperatorCostPredictor,
    score,
)

from .conftest import FAST, tiny_module
from .test_nodes import synthetic_node_networks

ONE_PER_FAMILY = ["densenet/s3/1", "mobilenetv2/s4/39", "googlenet/s3/2", "pnasnet/s3/4", "resnext/s3/35"]


def test_tracing_folds_batchnorm_and_activations_into_convolutions():
    kinds = [(k.kind, k.attr.get("act"), k.attr.get("bn")) for k in trace_kernels(tiny_module(), input_shape=(3, 32, 32))]
    assert kinds == [
        ("conv", "relu", True), ("maxpool", None, None), ("conv", "relu", False), ("gap", None, None),
        ("linear", None, None),
    ]
    conv, pool, dw = trace_kernels(tiny_module(), input_shape=(3, 32, 32))[:3]
    assert conv.out_shape == (8, 32, 32) and pool.out_shape == (8, 16, 16)
    assert dw.attr["groups"] == 8 and dw.flops == 2 * 8 * 16 * 16 * 9
    assert conv.flops == 2 * 8 * 32 * 32 * 3 * 9


@pytest.mark.parametrize("key", ONE_PER_FAMILY)
def test_every_kernel_graph_runs_with_the_traced_shapes(key):
    kernels = arch_kernels(key)
    assert kernels and kernels[-1].kind == "linear" and kernels[-1].out_shape == (10,)
    for kernel in {k.key: k for k in kernels}.values():
        assert Kernel.from_key(kernel.key) == kernel
        session = ort.InferenceSession(kernel.onnx())
        (y,) = session.run(None, {"x": np.zeros((1, *kernel.in_shapes[0]), np.float32)})
        assert y.shape == (1, *kernel.out_shape), kernel.key


def test_kernel_flops_add_up_to_the_network_macs():
    from iotnas.cost import cost

    for key in ONE_PER_FAMILY:
        conv_linear = sum(k.flops for k in arch_kernels(key) if k.kind in ("conv", "linear"))
        assert conv_linear == 2 * cost(key).macs, key


def test_stored_trees_predict_exactly_like_scikit_learn():
    from sklearn.ensemble import GradientBoostingRegressor

    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 5))
    y = x[:, 0] ** 2 + np.sin(x[:, 1]) + 0.1 * rng.standard_normal(300)
    stored = json.loads(json.dumps(fit_boosted_trees(x, y, seed=3, n_estimators=50, max_depth=3)))
    reference = GradientBoostingRegressor(n_estimators=50, max_depth=3, learning_rate=0.05, subsample=0.8,
                                          min_samples_leaf=2, random_state=3).fit(x, y)
    x_new = rng.standard_normal((50, 5))
    np.testing.assert_allclose(predict_boosted_trees(stored, x_new), reference.predict(x_new), rtol=1e-10)
    with pytest.raises(LatencyError, match="features"):
        predict_boosted_trees(stored, x_new[:, :3])


def test_score_counts_hits_and_rmspe():
    s = score([1.05, 2.5, 3.0, 0.5], [1.0, 2.0, 3.0, 1.0])
    assert s.n == 4 and s.within_10 == 0.5
    assert s.rmspe == pytest.approx(np.sqrt((0.05**2 + 0.25**2 + 0 + 0.5**2) / 4))
    with pytest.raises(LatencyError):
        score([1.0], [1.0, 2.0])


def test_calibrate_save_load_round_trip(tmp_path):
    """Real kernels and networks timed on this machine, fitted, saved, loaded: same predictions."""
    archs = ["mobilenetv2/s6/1", "mobilenetv2/s6/2", "resnext/s3/88", "mobilenetv2/s5/3"]
    predictor, calibration = calibrate(archs, network_protocol=FAST, kernel_protocol=FAST, max_kernels=60)
    assert len(calibration.networks) == 4 and 20 <= len(calibration.kernels) <= 60
    assert all(m.median_ms > 0 and m.n_runs >= FAST.min_runs for m in calibration.kernels.values())
    assert predictor.info["calibration_archs"] == archs and predictor.runtime == "onnxruntime"
    path = tmp_path / "p.json"
    predictor.save(path)
    loaded = LatencyPredictor.load(path)
    assert isinstance(loaded, KernelPredictor)
    held_out = ["mobilenetv2/s6/7", "resnext/s3/35"]
    before, after = predictor.predict_many(held_out), loaded.predict_many(held_out)
    assert before == after and all(np.isfinite(before))
    assert before == pytest.approx([loaded.predict(key) for key in held_out], rel=1e-12)
    # A timed kernel is looked up, not regressed.
    key, m = next(iter(calibration.kernels.items()))
    assert loaded.kernel_ms([Kernel.from_key(key)])[0] == m.median_ms


def test_cost_model_and_flops_line_on_released_timings(released_dir, tmp_path):
    rows = released_timings(released_dir / "results_RaspPi.json")
    assert len(rows) == 1617 and rows[0][0] == "densenet/s1/0" and rows[0][1] == pytest.approx(156.5386454)
    subset = rows[::40]
    networks = [(arch_kernels(key), ms) for key, ms, _ in subset]
    model = CostModelPredictor.fit(networks, seed=0)
    model.save(tmp_path / "c.json")
    loaded = LatencyPredictor.load(tmp_path / "c.json")
    assert [loaded.predict_kernels(ks) for ks, _ in networks] == [model.predict_kernels(ks) for ks, _ in networks]
    # In-sample, boosted trees on cost features must beat a line through FLOPs.
    fitted = score([model.predict_kernels(ks) for ks, _ in networks], [ms for _, ms in networks])
    line = FlopsPredictor.fit([f for _, _, f in subset], [ms for _, ms, _ in subset])
    baseline = score([line.predict_flops(f) for _, _, f in subset], [ms for _, ms, _ in subset])
    assert fitted.rmspe < baseline.rmspe
    assert FlopsPredictor.fit([1.0, 2.0, 3.0], [3.0, 5.0, 7.0]).predict_flops(4.0) == pytest.approx(9.0)
    # The operator-cost model, each mean weighted by how much its 5 runs agree.
    records = released_records(released_dir / "results_RaspPi.json")[::40]
    assert [r.key for r in records] == [key for key, _, _ in subset]
    noisy, steady = max(records, key=lambda r: r.std_ms / r.mean_ms), min(records, key=lambda r: r.std_ms / r.mean_ms)
    assert noisy.weight < steady.weight
    ops = OperatorCostPredictor.fit([(r.key, ks, r.mean_ms) for r, (ks, _) in zip(records, networks)],
                                    weights=[r.weight for r in records])
    ops.save(tmp_path / "o.json")
    loaded_ops = LatencyPredictor.load(tmp_path / "o.json")
    predicted = [ops.predict_network(r.key, ks) for r, (ks, _) in zip(records, networks)]
    assert [loaded_ops.predict_network(r.key, ks) for r, (ks, _) in zip(records, networks)] == predicted
    assert score(predicted, [r.mean_ms for r in records]).rmspe < baseline.rmspe


def test_released_repeats_are_one_network_timed_in_separate_sessions(released_dir):
    records = released_records(released_dir / "results_RaspPi.json")
    repeats = released_repeats(records)
    grouped = [r.key for group in repeats for r in group]
    assert all(len(group) >= 2 for group in repeats) and len(grouped) == len(set(grouped)) < len(records)
    # Two pnasnet/s3 draws of the same network (cells 1, 1, 1 of 15 planes), timed 41 % apart.
    by_key = {r.key: group for group in repeats for r in group}
    assert {r.key for r in by_key["pnasnet/s3/25"]} == {"pnasnet/s3/25", "pnasnet/s3/98"}
    # A repeat is the same computation: its records trace into the same kernels.
    for group in (by_key["pnasnet/s3/25"], by_key["densenet/s1/1"]):
        assert len({tuple(k.key for k in arch_kernels(r.key)) for r in group}) == 1
    assert {r.key for r in by_key["densenet/s1/1"]} == {"densenet/s1/1", "densenet/s2/1"}


def test_repeat_score_takes_every_record_as_the_prediction_of_each_other_one():
    def timing(key: str, ms: float) -> ReleasedTiming:
        return ReleasedTiming(key=key, mean_ms=ms, std_ms=0.0, flops=1.0)

    pair = (timing("a", 100.0), timing("b", 105.0))  # 2 ordered pairs, both within 10 %
    triple = (timing("c", 100.0), timing("d", 150.0), timing("e", 100.0))  # 6 pairs, c and e agree
    result = repeat_score([pair, triple])
    assert result.n == 8 and result.within_10 == pytest.approx(4 / 8)


def test_cross_validation_refits_the_trees_per_seed_in_the_same_folds(released_dir):
    records = released_records(released_dir / "results_RaspPi.json")[::120]  # 14: >= 10 per training fold
    networks = [(r, arch_kernels(r.key)) for r in records]
    cv = cross_validate_released(networks, seed=0, tree_seeds=(0, 1))
    assert cv["measured"] == [r.mean_ms for r in records]
    assert set(cv["ops_by_tree_seed"]) == {0, 1}
    assert cv["ops_by_tree_seed"][0] == cv["ops"]  # the default seed is not fitted twice, nor differently
    assert cv["ops_by_tree_seed"][1] != cv["ops"] and np.isfinite(cv["ops_by_tree_seed"][1]).all()
    assert len(cv["ops_by_tree_seed"][1]) == len(cv["cost"]) == len(cv["flops"]) == len(records)


@pytest.mark.parametrize(
    "content, message",
    [
        ("not json", "not valid JSON"),
        ('{"kind": "kernels"}', "format marker"),
        ('{"format": "iotnas-latency-predictor", "version": 99, "kind": "kernels"}', "version"),
        ('{"format": "iotnas-latency-predictor", "version": 1, "kind": "pickle"}', "unknown predictor kind"),
        ('{"format": "iotnas-latency-predictor", "version": 1, "kind": "flops"}', "malformed"),
    ],
)
def test_load_refuses_what_is_not_a_predictor(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(LatencyError, match=message):
        LatencyPredictor.load(path)
    with pytest.raises(LatencyError, match="cannot read"):
        LatencyPredictor.load(tmp_path / "missing.json")


def test_the_input_shape_builds_the_predicted_networks_and_older_files_read_as_rgb(tmp_path):
    from iotnas.cost import cost

    key = "mobilenetv2/s4/39"
    line = FlopsPredictor(slope=1e-6, intercept=0.5, info={})
    line.with_input(InputShape(channels=1, classes=7)).save(tmp_path / "grey.json")
    grey = LatencyPredictor.load(tmp_path / "grey.json")
    assert grey.input_shape == InputShape(channels=1, size=32, classes=7)
    assert grey.predict(key) == 1e-6 * cost(key, in_channels=1, num_classes=7).flops + 0.5
    assert line.predict(key) == 1e-6 * cost(key).flops + 0.5 != grey.predict(key)
    kernels = grey.kernels_of(key)
    assert kernels[0].in_shapes[0] == (1, 32, 32) and kernels[-1].out_shape == (7,)
    # Written before the shape was recorded: RGB 32x32 images of 10 classes, the only shape there was.
    older = line.to_dict()
    del older["input"]
    assert LatencyPredictor.from_dict(older).input_shape == DEFAULT_INPUT == InputShape(channels=3, size=32, classes=10)
    for bad in ({"channels": 0}, {"chanels": 1}, [1, 32, 10], {"classes": "ten"}):
        with pytest.raises(LatencyError, match="input shape"):
            LatencyPredictor.from_dict({**older, "input": bad})


def _synthetic_kernel_ms(kernel: Kernel) -> float:
    return 1e-3 + 1e-7 * kernel.flops


#: How each predictor kind is fitted on (kernels, ms) pairs; a new kind needs an entry here.
FITTERS = {
    "kernels": lambda networks: KernelPredictor.fit(
        kernel_ms={k.key: _synthetic_kernel_ms(k) for ks, _ in networks for k in ks}, networks=networks,
        runtime="onnxruntime", settings={}),
    "cost": CostModelPredictor.fit,
    "ops": lambda networks: OperatorCostPredictor.fit(
        [(f"mobilenetv2/s{1 + i % 2}/{i}", ks, ms) for i, (ks, ms) in enumerate(networks)]),
    # Node predictors learn from profiled graphs, not kernels: real optimised graphs with made-up node costs.
    "nodes": lambda _: NodePredictor.fit(synthetic_node_networks(), runtime="onnxruntime", settings={}),
    "flops": lambda networks: FlopsPredictor.fit([sum(k.flops for k in ks) for ks, _ in networks],
                                                 [ms for _, ms in networks]),
}


@pytest.fixture(scope="module")
def synthetic_networks():
    """Twelve small traced networks with made-up costs: the kernels' sum plus 20 % (cheap, untimed)."""
    networks = [trace_kernels(tiny_module(channels), input_shape=(3, 32, 32)) for channels in range(4, 16)]
    return [(ks, 1.2 * sum(map(_synthetic_kernel_ms, ks))) for ks in networks]


@pytest.mark.parametrize("kind", PREDICTORS.names())
def test_every_predictor_kind_fits_saves_loads_and_predicts_the_same(kind, synthetic_networks, tmp_path):
    if kind not in FITTERS:
        pytest.fail(f"predictor kind {kind!r} has no entry in FITTERS")
    predictor = FITTERS[kind](synthetic_networks)
    assert predictor.kind == kind
    predictor.save(tmp_path / "p.json")
    loaded = LatencyPredictor.load(tmp_path / "p.json")
    assert type(loaded) is type(predictor)
    held_out = ["mobilenetv2/s4/39", "resnext/s3/35"]
    predicted = predictor.predict_many(held_out)
    assert loaded.predict_many(held_out) == predicted and all(np.isfinite(predicted))
    # Asked for grey images, it predicts networks built for them, and its file says so.
    grey = predictor.with_input(InputShape(channels=1))
    grey.save(tmp_path / "grey.json")
    reloaded = LatencyPredictor.load(tmp_path / "grey.json")
    assert reloaded.input_shape == InputShape(channels=1, size=32, classes=10) and loaded.input_shape == DEFAULT_INPUT
    assert reloaded.predict_many(held_out) == grey.predict_many(held_out)


def test_sampled_calibration_archs_cover_the_families():
    keys = sample_archs(10, seed=0, exclude={"densenet/s1/0"})
    assert len(set(keys)) == 10 and {k.split("/")[0] for k in keys} == {
        "densenet", "mobilenetv2", "googlenet", "pnasnet", "resnext"}
    assert sample_archs(10, seed=0) == sample_archs(10, seed=0)
