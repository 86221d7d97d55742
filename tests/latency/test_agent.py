"""A real device agent process on 127.0.0.1: round trip, authentication, limits, clean errors."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import subprocess
import sys

import pytest

from iotnas.errors import AgentError
from iotnas.latency import AgentClient, LatencyMeasurement, Protocol, measure_latency
from iotnas.latency.agent import read_token

from .conftest import FAST, TOKEN
from .conftest import raw_post as _raw_post


def _healthy(agent) -> bool:
    return AgentClient(agent.url, token=TOKEN).health()["status"] == "ok"


def test_agent_module_does_not_import_torch():
    code = "import sys, iotnas.latency.agent; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_health_reports_the_device_environment(agent):
    health = AgentClient(agent.url, token=TOKEN).health()
    assert health["status"] == "ok" and health["runtimes"] == ["onnxruntime"]
    assert health["environment"]["cpu"] and health["environment"]["onnxruntime"]
    identity = AgentClient(agent.url, token=TOKEN).identity()
    assert identity == {"hostname": socket.gethostname(), "cpu": health["environment"]["cpu"],
                        "machine": health["environment"]["machine"], "cpu_count": health["environment"]["cpu_count"],
                        "runtime": "onnxruntime", "onnxruntime": health["environment"]["onnxruntime"]}


def test_round_trip_times_a_graph_on_the_agent(agent, tiny_onnx):
    client = AgentClient(agent.url, token=TOKEN)
    (m,) = client.measure_onnx([(tiny_onnx, "tiny")], protocol=FAST)
    assert isinstance(m, LatencyMeasurement)
    assert m.target == "tiny" and m.runtime == "onnxruntime" and m.n_runs >= FAST.min_runs
    assert 0 < m.min_ms <= m.median_ms <= m.p90_ms
    assert "POST /measure 200" in agent.log()
    assert base64.b64encode(tiny_onnx).decode()[:64] not in agent.log()  # one line per request, never the payload
    # The front door takes the agent as `device`, here by URL with the token from the environment.
    import os

    os.environ["IOTNAS_AGENT_TOKEN"] = TOKEN
    try:
        again = measure_latency(tiny_onnx, device=agent.url, protocol=FAST)
    finally:
        del os.environ["IOTNAS_AGENT_TOKEN"]
    assert again.key == m.key.replace("tiny|", again.target + "|")


def test_a_bad_graph_fails_alone(agent, tiny_onnx):
    good, bad = AgentClient(agent.url, token=TOKEN).measure_onnx([(tiny_onnx, None), (b"junk", None)], protocol=FAST)
    assert isinstance(good, LatencyMeasurement)
    assert isinstance(bad, AgentError) and "cannot load" in str(bad)


@pytest.mark.parametrize("token", [None, "wrong-token", TOKEN + "x"])
def test_refused_without_the_right_token(agent, tiny_onnx, token):
    client = AgentClient(agent.url, token=token)
    with pytest.raises(AgentError, match="refused"):
        client.health()
    with pytest.raises(AgentError, match="refused"):
        client.measure_onnx([(tiny_onnx, None)], protocol=FAST)
    assert _healthy(agent)


def test_oversize_request_refused_and_agent_keeps_serving(agent, tiny_onnx):
    big = json.dumps({"jobs": [{"onnx_b64": base64.b64encode(bytes(200_000)).decode()}]}).encode()
    status, payload = _raw_post(agent.port, big)
    assert status == 413 and "exceeds the limit" in payload["error"]
    status, payload = _raw_post(agent.port, b"{}", length=10**12)  # a lie about the length is not read
    assert status == 413
    with pytest.raises(AgentError):
        AgentClient(agent.url, token=TOKEN).measure_onnx([(bytes(200_000), None)], protocol=FAST)
    assert _healthy(agent)


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"\xff\xfe",
        b"[]",
        b'{"jobs": []}',
        b'{"jobs": [{"onnx_b64": "%%%not base64"}]}',
        b'{"jobs": [{"onnx_b64": "AAAA", "runtime": "torch"}]}',
        b'{"jobs": [{"onnx_b64": "AAAA"}], "protocol": {"min_runs": "many"}}',
        b'{"jobs": [{"onnx_b64": "AAAA", "settings": {"threads": 0}}]}',
        b'{"jobs": [{"onnx_b64": "AAAA"}], "pickle": "no"}',
    ],
)
def test_malformed_requests_refused_cleanly(agent, body):
    status, payload = _raw_post(agent.port, body)
    assert status == 400 and payload["error"]
    assert _healthy(agent)


def test_unknown_endpoint_and_unreachable_and_slow_agents(agent, tiny_onnx):
    conn = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=10)
    conn.request("GET", "/admin")
    assert conn.getresponse().status == 404
    conn.close()
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    with pytest.raises(AgentError, match="cannot reach"):
        AgentClient(f"http://127.0.0.1:{free}", token=TOKEN, timeout_s=5).health()
    slow = Protocol(warmup_runs=1, warmup_s=0, min_runs=10, min_s=3.0, max_s=3.0)
    with pytest.raises(AgentError, match="did not answer within"):
        AgentClient(agent.url, token=TOKEN, timeout_s=0.5).measure_onnx([(tiny_onnx, None)], protocol=slow)
    with pytest.raises(AgentError, match="http://"):
        AgentClient("127.0.0.1:8765")
    assert _healthy(agent)


def test_token_sources(tmp_path, monkeypatch):
    path = tmp_path / "t"
    path.write_text("  abc \n")
    assert read_token(path) == "abc"
    monkeypatch.setenv("IOTNAS_AGENT_TOKEN", "from-env")
    assert read_token(None) == "from-env"
    path.write_text("\n")
    with pytest.raises(AgentError, match="empty"):
        read_token(path)
    with pytest.raises(AgentError, match="cannot read"):
        read_token(tmp_path / "missing")


def test_a_graph_pointing_at_files_on_the_device_is_refused(agent, tmp_path):
    """ONNX external data would make the runtime read files on the device; graphs arrive as bytes, so it cannot."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.zeros((1, 1), np.float32), "w")
    weight.data_location = TensorProto.EXTERNAL
    weight.ClearField("raw_data")
    for key, value in {"location": "token", "offset": "0", "length": "4"}.items():
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])], [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    (result,) = AgentClient(agent.url, token=TOKEN).measure_onnx([(model.SerializeToString(), None)], protocol=FAST)
    assert isinstance(result, AgentError) and "cannot load" in str(result)
