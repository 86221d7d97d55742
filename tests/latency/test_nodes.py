"""Optimised-graph nodes timed in context, the node predictor, its calibration and `latency explain`."""

from __future__ import annotations

import dataclasses
import functools
import json

import numpy as np
import pytest

from iotnas.errors import LatencyError
from iotnas.latency.calibrate import _allocate, calibrate_nodes
from iotnas.latency.measure import LatencyMeasurement, TimedRuns, make_measurement
from iotnas.latency.nodes import NetworkProfile, Node, profile_onnx
from iotnas.latency.predictor import LatencyPredictor, NodePredictor
from iotnas.latency.runtimes import export_onnx

from .conftest import FAST, tiny_module


def test_the_profile_names_fused_nodes_with_their_shapes_and_times(tiny_onnx):
    profile = profile_onnx(tiny_onnx, runs=3, warmup_runs=1, protocol=FAST)
    assert len(profile.node_us) == len(profile.nodes) and profile.runs == 3
    assert all(t > 0 for t in profile.node_us)
    # The whole network, timed unprofiled in the same process by both clocks.
    assert profile.timing is not None and profile.timing.n_runs >= FAST.min_runs
    assert profile.network_ms("median_ms") == profile.timing.median_ms > 0
    assert profile.network_ms("cpu_median_ms") == profile.timing.cpu_median_ms > 0
    convs = [n for n in profile.nodes if n.is_conv]
    first = convs[0]
    # Conv + BatchNorm + ReLU run as one node: the activation is an attribute, BatchNorm is folded away.
    assert first.attr.get("activation") == "Relu" and not any(n.op.endswith("BatchNormalization") for n in profile.nodes)
    # 8 channels, padded to the NCHWc block of this CPU's kernels (8 with AVX2, 16 with AVX-512), as computed.
    channels = first.out_shape[1]
    assert channels in (8, 16) and first.out_shape == (1, channels, 32, 32)
    assert first.flops == 2 * channels * 32 * 32 * 3 * 9
    depthwise = convs[1]
    assert depthwise.attr["group"] == channels and depthwise.features()[11] == 1.0  # the depthwise flag
    assert NetworkProfile.from_dict(json.loads(json.dumps(profile.to_dict()))) == profile
    read = profile_onnx(tiny_onnx, runs=0)  # reading the graph needs no timing
    # The same nodes; ONNX Runtime may name the layout reorders it inserts differently per session.
    unnamed = lambda nodes: [dataclasses.replace(n, name="") for n in nodes]
    assert unnamed(read.nodes) == unnamed(profile.nodes) and read.timing is None and not read.node_us


def test_a_malformed_node_or_profile_is_refused():
    with pytest.raises(LatencyError, match="malformed graph node"):
        Node.from_list(["only", "two"])
    with pytest.raises(LatencyError, match="malformed network profile"):
        NetworkProfile.from_dict({"nodes": []})


def _timing(wall_ms: float, cpu_ms: float) -> LatencyMeasurement:
    """A whole-network timing of one run per clock (the real summariser, made-up durations)."""
    runs = TimedRuns(wall_ns=[round(wall_ms * 1e6)], cpu_ns=[round(cpu_ms * 1e6)], n_warmup=1)
    return make_measurement(target="synthetic", runtime="onnxruntime", settings={}, sessions=[runs],
                            input_shape=(1, 3, 32, 32), environment={})


@functools.cache
def synthetic_node_networks(cpu_factor: float = 1.0, profiler_us: float = 0.0) -> list[NetworkProfile]:
    """Real optimised graphs of small modules with made-up node costs: 1 us + 0.1 ns per FLOP, sum + 10 us.

    The thread CPU time is ``cpu_factor`` times the wall time (a core shared with other work); the
    profile shows every node ``profiler_us`` slower than it runs unprofiled.
    """
    out = []
    for channels in (*range(4, 16), 24, 32, 48, 64):
        nodes = profile_onnx(export_onnx(tiny_module(channels), input_shape=(1, 3, 32, 32)), runs=0).nodes
        us = tuple(1.0 + 1e-4 * n.flops for n in nodes)
        wall_ms = sum(us) / 1000 + 0.01
        out.append(NetworkProfile(nodes=nodes, node_us=tuple(t + profiler_us for t in us), runs=1,
                                  timing=_timing(wall_ms, cpu_factor * wall_ms)))
    return out


def test_node_predictor_files_round_trip_as_plain_json(tmp_path):
    predictor = NodePredictor.fit(synthetic_node_networks(), runtime="onnxruntime", settings={})
    path = tmp_path / "nodes.json"
    predictor.save(path)
    data = json.loads(path.read_text())  # plain JSON: nothing is unpickled or executed on load
    assert data["kind"] == "nodes" and set(data["trees"]) >= {"*"}
    loaded = LatencyPredictor.load(path)
    graphs = [p.nodes for p in synthetic_node_networks()]
    assert loaded.predict_graphs(graphs) == predictor.predict_graphs(graphs)
    # The network term learned the sum: in-sample predictions land near the made-up latencies.
    measured = [p.network_ms("median_ms") for p in synthetic_node_networks()]
    assert np.allclose(predictor.predict_graphs(graphs), measured, rtol=0.2)


def test_the_correction_is_stored_and_explained_and_older_files_predict_without_it(tmp_path):
    """The whole-network correction travels in the file, its factor is in every node's explained time
    (they still add up), and a file written before it existed loads and predicts the node sum alone."""
    networks = synthetic_node_networks()
    graphs = [p.nodes for p in networks]
    predictor = NodePredictor.fit(networks, runtime="onnxruntime", settings={})
    data = predictor.to_dict()
    assert data["correction"]["ops"] == sorted({n.op for g in graphs for n in g}) and data["correction"]["trees"]
    costs, rest = predictor.explain("mobilenetv2/s6/1")
    assert np.isclose(sum(c.ms for c in costs) + rest, predictor.predict("mobilenetv2/s6/1"))
    del data["correction"]
    path = tmp_path / "older.json"
    path.write_text(json.dumps(data))
    older = LatencyPredictor.load(path)
    node_sum = NodePredictor(trees=predictor.trees, network=predictor.network, runtime="onnxruntime", settings={},
                             info={})
    assert older.correction is None and older.predict_graphs(graphs) == node_sum.predict_graphs(graphs)
    assert older.predict_graphs(graphs) != predictor.predict_graphs(graphs)  # the correction is not a no-op


def test_the_network_term_takes_off_what_the_profiler_adds_to_every_node():
    """Each profiled node 5 us slower than it runs: b comes out near -5 us, and predictions stay close."""
    networks = synthetic_node_networks(profiler_us=5.0)
    predictor = NodePredictor.fit(networks, runtime="onnxruntime", settings={})
    a, b, c = predictor.network
    assert a > 0 and c >= 0 and -0.008 < b < -0.002  # ms per node
    measured = [p.network_ms("median_ms") for p in networks]
    assert np.allclose(predictor.predict_graphs([p.nodes for p in networks]), measured, rtol=0.2)


def test_the_statistic_chooses_which_network_timing_is_learned():
    """Node times are the same; fitted on thread CPU time (here half the wall time), predictions halve."""
    graphs = [p.nodes for p in synthetic_node_networks()]
    wall = NodePredictor.fit(synthetic_node_networks(0.5), statistic="median_ms", runtime="onnxruntime", settings={})
    cpu = NodePredictor.fit(synthetic_node_networks(0.5), statistic="cpu_median_ms", runtime="onnxruntime",
                            settings={})
    assert cpu.info["statistic"] == "cpu_median_ms"
    ratio = np.array(cpu.predict_graphs(graphs)) / np.array(wall.predict_graphs(graphs))
    assert np.allclose(ratio, 0.5, rtol=0.05)
    with pytest.raises(LatencyError, match="statistic must be one of median_ms, cpu_median_ms"):
        NodePredictor.fit(synthetic_node_networks(), statistic="mean_ms", runtime="onnxruntime", settings={})
    with pytest.raises(LatencyError, match="no whole-network timing"):
        NetworkProfile(nodes=graphs[0]).network_ms("median_ms")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: d["trees"]["*"].update(trees="not a list"), "malformed"),
        (lambda d: d.update(network=[1.0]), "3 network coefficients"),
        (lambda d: d["trees"].pop("*"), "shared regressor"),
        (lambda d: d.pop("settings"), "malformed nodes predictor"),
        (lambda d: d["correction"].pop("ops"), "correction"),
        (lambda d: d["correction"].update(trees=[{"left": [0]}]), "malformed"),
    ],
)
def test_a_corrupted_node_predictor_is_one_clear_error(tmp_path, cli, damage, message):
    data = NodePredictor.fit(synthetic_node_networks(), runtime="onnxruntime", settings={}).to_dict()
    damage(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(LatencyError, match=message):
        LatencyPredictor.load(path).predict_graphs([synthetic_node_networks()[0].nodes])
    code, out, err = cli("latency", "explain", str(path), "mobilenetv2/s6/1")
    assert code == 2 and out == "" and err.startswith("iotnas: error:") and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_adaptive_rounds_draw_more_where_the_error_is_high():
    assert _allocate(10, {"a/s1": 3.0, "b/s1": 1.0}) == {"a/s1": 8, "b/s1": 2}
    assert sum(_allocate(7, {"a/s1": 1.0, "b/s1": 1.0, "c/s1": 1.0}).values()) == 7


def test_calibrate_profiles_real_networks_and_scores_held_out_ones(tmp_path, cli):
    """Small and fast: real timings on this machine, too few to trust, so the warnings say so."""
    predictor, calibration = calibrate_nodes(["mobilenetv2/s6", "resnext/s3"], networks=6, held_out=2, rounds=1,
                                             protocol=FAST, profile_runs=3)
    assert len(calibration.networks) == 6 and set(calibration.profiles) == set(calibration.networks)
    assert calibration.score is not None and calibration.score.n == len(calibration.held_out) == 2
    assert not set(calibration.held_out) & set(calibration.networks)
    assert {k.rsplit("/", 1)[0] for k in calibration.networks} == {"mobilenetv2/s6", "resnext/s3"}
    assert len(calibration.warnings()) >= 2 and calibration.seconds > 0
    assert predictor.info["calibration_archs"] == list(calibration.networks)
    path = tmp_path / "p.json"
    predictor.save(path)
    key = next(iter(calibration.held_out))
    code, out, err = cli("latency", "explain", str(path), key, "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["latency_ms"] == pytest.approx(calibration.held_out[key][0])
    assert shown["latency_ms"] == pytest.approx(sum(n["ms"] for n in shown["nodes"]) + shown["overhead_ms"])
