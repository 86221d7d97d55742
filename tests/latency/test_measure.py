"""The timing protocol on real models and real runtimes: structure and sanity, never speed."""

from __future__ import annotations

import numpy as np
import pytest

from iotnas.errors import LatencyError
from iotnas.latency import LatencyMeasurement, Protocol, measure_latency, measure_many
from iotnas.latency.measure import (
    MIN_RUNS_FLOOR,
    TimedRuns,
    make_measurement,
    run_protocol,
    summarize,
)
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
    runs = run_protocol(lambda: calls.append(1), Protocol(warmup_runs=7, warmup_s=0, min_runs=20, min_s=0))
    assert runs.n_warmup == 7 and len(runs.wall_ns) == len(runs.cpu_ns) == 20 and len(calls) == 27
    # A model slower than the cap still gets the floor of runs.
    import time

    runs = run_protocol(lambda: time.sleep(0.002), Protocol(warmup_runs=1, warmup_s=0, min_runs=50, min_s=0.01, max_s=0.01))
    samples, cpu = runs.wall_ns, runs.cpu_ns
    assert len(samples) == MIN_RUNS_FLOOR
    assert all(s >= 2_000_000 for s in samples)
    assert sum(cpu) < sum(samples) / 2  # sleeping is wall time, not CPU time
    # ... and warming up stops at warmup_max_s rather than after 100 slow runs.
    runs = run_protocol(lambda: time.sleep(0.01), Protocol(warmup_runs=100, warmup_s=0, warmup_max_s=0.05, min_runs=10, min_s=0))
    assert 1 <= runs.n_warmup < 100


def test_a_protocol_timing_for_longer_than_its_cap_raises_the_cap():
    assert Protocol.timing_for(None) == Protocol()
    assert Protocol.timing_for(0.05) == Protocol(min_s=0.05)  # the cap (30 s) stays
    assert Protocol.timing_for(120.0) == Protocol(min_s=120.0, max_s=120.0)  # else min_s > max_s is refused
    assert Protocol.timing_for(None, 16) == Protocol(sessions=16)
    assert Protocol.timing_for(0.1, 4) == Protocol(min_s=0.1, sessions=4)


def test_several_sessions_count_alike_in_the_median():
    """Over sessions, the medians are the mean of the sessions' medians: a session that fitted in more
    runs does not outweigh the others (pooled, 300 runs at 1 ms would outvote 100 at 2 ms)."""
    fast = TimedRuns(wall_ns=[1_000_000] * 300, cpu_ns=[900_000] * 300, n_warmup=10)
    slow = TimedRuns(wall_ns=[2_000_000] * 100, cpu_ns=[1_900_000] * 100, n_warmup=10)
    m = make_measurement(target="t", runtime="onnxruntime", settings={}, sessions=[fast, slow],
                         input_shape=(1, 3, 32, 32), environment={})
    assert m.median_ms == pytest.approx(1.5) and m.cpu_median_ms == pytest.approx(1.4)
    assert (m.n_sessions, m.n_runs, m.n_warmup) == (2, 400, 20)
    assert m.min_ms == pytest.approx(1.0) and m.p90_ms == pytest.approx(2.0)  # the other figures pool the runs
    assert LatencyMeasurement.from_json(m.to_json()) == m
    single = make_measurement(target="t", runtime="onnxruntime", settings={}, sessions=[slow],
                              input_shape=(1, 3, 32, 32), environment={})
    assert (single.median_ms, single.n_sessions) == (pytest.approx(2.0), 1)
    with pytest.raises(LatencyError, match="no timed sessions"):
        make_measurement(target="t", runtime="onnxruntime", settings={}, sessions=[], input_shape=(1, 3, 32, 32),
                         environment={})


def test_a_measurement_stored_before_sessions_reads_as_one_session():
    data = make_measurement(target="t", runtime="onnxruntime", settings={}, input_shape=(1, 3, 32, 32),
                            sessions=[TimedRuns(wall_ns=[1_000_000] * 20, cpu_ns=[1_000_000] * 20, n_warmup=1)],
                            environment={}).to_dict()
    del data["n_sessions"]
    assert LatencyMeasurement.from_dict(data).n_sessions == 1


@pytest.mark.parametrize("runtime", ["onnxruntime", "torch"])
def test_a_protocol_of_several_sessions_times_each(runtime):
    protocol = Protocol(warmup_runs=2, warmup_s=0, min_runs=MIN_RUNS_FLOOR, min_s=0, sessions=3)
    m = measure_latency(tiny_module(), runtime=runtime, protocol=protocol)
    assert m.n_sessions == 3 and m.n_runs == 3 * MIN_RUNS_FLOOR and m.n_warmup == 3 * 2


@pytest.mark.parametrize("sessions", [0, 65, 2.0, True])
def test_a_protocol_refuses_a_bad_session_count(sessions):
    with pytest.raises(LatencyError, match="protocol.sessions must be an integer from 1 to 64"):
        Protocol(sessions=sessions)
    with pytest.raises(LatencyError, match="protocol.sessions"):
        Protocol.from_dict({"sessions": sessions})


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
