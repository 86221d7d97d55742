"""The timing protocol on real models and real runtimes: structure and sanity, never speed."""

from __future__ import annotations

import numpy as np
import pytest

from iotnas.errors import LatencyError
from iotnas.latency import LatencyMeasurement, Protocol, measure_latency, measure_many
from iotnas.latency.measure import MIN_RUNS_FLOOR, run_protocol, summarize
from iotnas.latency.runtimes import OrtSettings, ort_runner

from .conftest import FAST, tiny_module


def _check_structure(m: LatencyMeasurement, protocol: Protocol) -> None:
    assert m.n_runs >= protocol.min_runs
    assert m.n_warmup >= protocol.warmup_runs
    assert 0 < m.min_ms <= m.median_ms <= m.p90_ms
    assert 0 < m.cpu_median_ms <= 2 * m.p90_ms
    assert m.iqr_ms >= 0 and m.cv >= 0
    assert m.timed_s > 0
    assert m.input_shape == (1, 3, 32, 32)
    env = dict(m.environment)
    assert env["cpu"] and env["python"] and "governor" in env
    assert LatencyMeasurement.from_json(m.to_json()) == m


def test_summarize_agrees_with_numpy():
    rng = np.random.default_rng(1)
    samples = [int(x) for x in rng.integers(1_000_000, 9_000_000, size=101)]
    stats = summarize(samples)
    ms = np.array(samples) / 1e6
    assert stats["median_ms"] == pytest.approx(np.median(ms))
    assert stats["p90_ms"] == pytest.approx(np.percentile(ms, 90))
    assert stats["iqr_ms"] == pytest.approx(np.percentile(ms, 75) - np.percentile(ms, 25))
    assert stats["cv"] == pytest.approx(np.std(ms, ddof=1) / np.mean(ms))


def test_protocol_counts_runs_and_respects_the_cap():
    calls = []
    samples, n_warmup, cpu = run_protocol(lambda: calls.append(1), Protocol(warmup_runs=7, warmup_s=0, min_runs=20, min_s=0))
    assert n_warmup == 7 and len(samples) == len(cpu) == 20 and len(calls) == 27
    # A model slower than the cap still gets the floor of runs.
    import time

    samples, _, cpu = run_protocol(lambda: time.sleep(0.002), Protocol(warmup_runs=1, warmup_s=0, min_runs=50, min_s=0.01, max_s=0.01))
    assert len(samples) == MIN_RUNS_FLOOR
    assert all(s >= 2_000_000 for s in samples)
    assert sum(cpu) < sum(samples) / 2  # sleeping is wall time, not CPU time
    # ... and warming up stops at warmup_max_s rather than after 100 slow runs.
    _, n_warmup, _ = run_protocol(lambda: time.sleep(0.01), Protocol(warmup_runs=100, warmup_s=0, warmup_max_s=0.05, min_runs=10, min_s=0))
    assert 1 <= n_warmup < 100


def test_a_protocol_timing_for_longer_than_its_cap_raises_the_cap():
    assert Protocol.timing_for(None) == Protocol()
    assert Protocol.timing_for(0.05) == Protocol(min_s=0.05)  # the cap (30 s) stays
    assert Protocol.timing_for(120.0) == Protocol(min_s=120.0, max_s=120.0)  # else min_s > max_s is refused


@pytest.mark.parametrize("bad", [dict(min_runs=3), dict(min_s=5.0, max_s=1.0), dict(warmup_runs=0)])
def test_protocol_refuses_bad_settings(bad):
    with pytest.raises(LatencyError):
        Protocol(**bad)
    with pytest.raises(LatencyError, match="unknown protocol keys"):
        Protocol.from_dict({"min_run": 5})


def test_onnx_export_matches_torch(tiny_onnx):
    import torch

    run_once, shape = ort_runner(tiny_onnx, OrtSettings())
    assert shape == (1, 3, 32, 32)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)  # the runner's own input
    (ort_out,) = run_once()
    with torch.inference_mode():
        ref = tiny_module()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ort_out, ref, rtol=1e-4, atol=1e-5)


def test_onnxruntime_in_a_fresh_process(tiny_onnx):
    m = measure_latency(tiny_onnx, runtime="onnxruntime", threads=1, protocol=FAST)
    _check_structure(m, FAST)
    assert m.runtime == "onnxruntime"
    assert dict(m.settings)["threads"] == 1 and dict(m.settings)["inter_op_threads"] == 1
    assert m.target.startswith("onnx:") and m.key.startswith(m.target + "|onnxruntime|")


def test_runtime_and_settings_are_part_of_the_identity(tiny_onnx):
    a, b = measure_many([tiny_onnx, tiny_onnx], protocol=FAST, settings=OrtSettings(threads=1), isolate=False)
    c = measure_latency(tiny_onnx, protocol=FAST, settings=OrtSettings(threads=2))
    assert a.key == b.key != c.key


def test_torch_eager_on_a_module_and_on_an_architecture():
    m = measure_latency(tiny_module(), runtime="torch", threads=1, protocol=FAST)
    _check_structure(m, FAST)
    assert m.key.endswith("|torch|interop_threads=1,threads=1|3x32x32")
    a = measure_latency("mobilenetv2/s4/39", runtime="torch", protocol=FAST)  # built in a fresh process
    assert a.target == "mobilenetv2/s4/39" and a.n_runs >= FAST.min_runs


def test_bad_inputs_raise_latency_errors(tiny_onnx):
    with pytest.raises(LatencyError, match="cannot load"):
        measure_latency(b"not an onnx graph", protocol=FAST)
    with pytest.raises(LatencyError, match="unknown runtime"):
        measure_latency(tiny_onnx, runtime="tensorflow")
    with pytest.raises(LatencyError, match="torch runtime"):
        measure_latency(tiny_onnx, runtime="torch")
    with pytest.raises(LatencyError, match="missing fields"):
        LatencyMeasurement.from_json('{"target": "x"}')
