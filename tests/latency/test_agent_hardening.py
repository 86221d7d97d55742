"""What a client can make the device agent spend, and what it may echo: a real agent process on 127.0.0.1.

Every size a request sets is bounded and named in the refusal; a graph that
allocates gigabytes hits the timing process's memory limit; a slow client is
cut off at the request deadline; connections beyond the cap cost no thread;
tokens never appear in a message or a log line; and random requests get 4xx
or 2xx answers, never a crash.
"""

from __future__ import annotations

import base64
import json
import math
import os
import random
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from iotnas.errors import AgentError, LatencyError
from iotnas.latency import AgentClient, AgentLimits, OrtSettings, Protocol, check_threads, usable_cores
from iotnas.latency.agent import read_token

from .conftest import FAST, TOKEN, RunningAgent, raw_post

READ_DEADLINE_S = 3.0
MAX_CONNECTIONS = 4


@pytest.fixture(scope="module")
def hardened(tmp_path_factory) -> Iterator[RunningAgent]:
    running = RunningAgent(
        tmp_path_factory.mktemp("hardened"),
        max_request_mb=1.0,
        options=("--read-deadline-s", str(READ_DEADLINE_S), "--max-connections", str(MAX_CONNECTIONS),
                 "--memory-limit-mb", "1024"),
    )
    yield running
    running.stop()


def _job(onnx: bytes, **changes) -> dict:
    return {"onnx_b64": base64.b64encode(onnx).decode(), "target": "t", "settings": OrtSettings().to_dict(), **changes}


def _no_traceback(agent: RunningAgent) -> None:
    assert "Traceback" not in agent.log()


def _threads(pid: int) -> int:
    return int(re.search(r"^Threads:\s+(\d+)", Path(f"/proc/{pid}/status").read_text(), re.M).group(1))


# ----------------------------------------------------------------------------- bounds


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ('{{"jobs": [{job_threads_million}]}}', "settings.threads"),
        ('{{"jobs": [{job_threads_half}]}}', "settings.threads"),
        ('{{"jobs": [{job_threads_over}]}}', "the cores this process may use"),
        ('{{"jobs": [{job_spin_int}]}}', "settings.allow_spinning"),
        ('{{"jobs": [{job_long_target}]}}', "1000 characters"),
        ('{{"jobs": [{job_extra_key}]}}', "unknown job keys"),
        ('{{"jobs": [{job}], "protocol": {{"min_runs": 1{zeros400}}}}}', "protocol.min_runs must be an integer"),
        ('{{"jobs": [{job}], "protocol": {{"min_runs": 1{zeros5000}}}}}', "not valid JSON"),
        ('{{"jobs": [{job}], "protocol": {{"min_runs": 12.5}}}}', "protocol.min_runs"),
        ('{{"jobs": [{job}], "protocol": {{"max_s": 1e400}}}}', "protocol.max_s must be a number from 0 to 3600"),
        ('{{"jobs": [{job}], "protocol": {{"max_s": NaN}}}}', "NaN"),
        ('{{"jobs": [{job}], "protocol": {{"min_s": -Infinity}}}}', "Infinity"),
        ('{{"jobs": [{job}], "protocol": {{"warmup_runs": true}}}}', "protocol.warmup_runs"),
        ('{{"jobs": [{job}], "isolate": "yes"}}', "isolate must be true or false"),
        ('{{"jobs": [{job}], "isolate": 1}}', "isolate must be true or false"),
        ('{{"jobs": [{jobs257}]}}', "a list of 1 to 256 jobs; got 257 jobs"),
        ('{{"jobs": [{job}], "protocol": {nested500}}}', "protocol must be a JSON object"),
        ("{nested100000}", "nested too deeply"),
    ],
)
def test_every_size_a_request_sets_is_bounded_and_named(hardened, tiny_onnx, body, says):
    parts = {
        "job": json.dumps(_job(tiny_onnx)),
        "job_threads_million": json.dumps(_job(tiny_onnx, settings={"threads": 1_000_000})),
        "job_threads_half": json.dumps(_job(tiny_onnx, settings={"threads": 2.5})),
        "job_threads_over": json.dumps(_job(tiny_onnx, settings={"threads": usable_cores() + 1})),
        "job_spin_int": json.dumps(_job(tiny_onnx, settings={"allow_spinning": 1})),
        "job_long_target": json.dumps(_job(tiny_onnx, target="t" * 1001)),
        "job_extra_key": json.dumps(_job(tiny_onnx, command="rm -rf /")),
        "jobs257": ", ".join(['{"onnx_b64": "AAAA"}'] * 257),
        "zeros400": "0" * 400,
        "zeros5000": "0" * 5000,
        "nested500": "[" * 500 + "]" * 500,
        "nested100000": "[" * 100_000 + "]" * 100_000,
    }
    status, payload = raw_post(hardened.port, body.format(**parts).encode())
    assert status == 400 and says in payload["error"], payload
    _no_traceback(hardened)


def test_the_same_bounds_hold_in_python_and_the_cli(cli, tmp_path):
    cores = usable_cores()
    with pytest.raises(LatencyError, match=r"settings.threads must be an integer from 1 to 256, got 1000000"):
        OrtSettings(threads=1_000_000)
    with pytest.raises(LatencyError, match="settings.threads"):
        OrtSettings(threads=2.5)  # type: ignore[arg-type]
    with pytest.raises(LatencyError, match=rf"from 1 to {cores} \(the cores this process may use\)"):
        check_threads(cores + 1)
    assert check_threads(cores + 1, remote=True) == cores + 1  # a device agent checks its own cores
    with pytest.raises(LatencyError, match="protocol.min_runs.*about 401 digits"):
        Protocol(min_runs=10**400)
    with pytest.raises(LatencyError, match="protocol.max_s"):
        Protocol(max_s=math.inf)
    with pytest.raises(LatencyError, match="--time-limit-s must be a number from 1 to 86400, got inf"):
        AgentLimits(time_limit_s=math.inf)
    with pytest.raises(LatencyError, match="--max-connections"):
        AgentLimits(max_connections=0)

    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    for args, says in [
        (("latency", "measure", "mobilenetv2", "s4", "1", "--threads", str(cores + 1)), "--threads must be"),
        (("agent", "serve", "--port", "0", "--token-file", str(token_file), "--time-limit-s", "inf"), "--time-limit-s"),
        (("agent", "serve", "--port", "0", "--token-file", str(token_file), "--memory-limit-mb", "1"),
         "--memory-limit-mb must be an integer from 512"),
        (("agent", "serve", "--port", "0", "--token-file", str(token_file), "--read-deadline-s", "nan"),
         "--read-deadline-s"),
    ]:
        code, out, err = cli(*args)
        assert code == 2 and says in err and len(err.strip().splitlines()) == 1, (args, err)


# ----------------------------------------------------------------------------- memory


def _memory_bomb() -> bytes:
    """A graph of a few hundred bytes that asks for 2 GB: ``ConstantOfShape [5e8]`` -> ``ReduceSum``."""
    from onnx import TensorProto, helper

    shape = helper.make_tensor("shape", TensorProto.INT64, [1], [500_000_000])
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    graph = helper.make_graph(
        [helper.make_node("ConstantOfShape", ["shape"], ["big"], value=one),
         helper.make_node("ReduceSum", ["big"], ["total"], keepdims=1),
         helper.make_node("Add", ["x", "total"], ["y"])],
        "bomb",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [shape],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_a_graph_that_allocates_gigabytes_hits_the_memory_limit(hardened, tiny_onnx):
    bomb = _memory_bomb()
    assert len(bomb) < 300
    client = AgentClient(hardened.url, token=TOKEN)
    with pytest.raises(AgentError, match=r"HTTP 507: .*out of memory.*1024 MiB"):
        client.measure_onnx([(bomb, None)], protocol=FAST)
    (m,) = client.measure_onnx([(tiny_onnx, "tiny")], protocol=FAST)  # the limit leaves room for real models
    assert m.n_runs >= FAST.min_runs
    _no_traceback(hardened)


# ----------------------------------------------------------------------------- connections


def _closed_after(sock: socket.socket, trickle: bytes, limit_s: float) -> tuple[float, bytes]:
    """Send ``trickle`` a byte every 0.2 s until the agent closes; seconds taken and what it answered."""
    start, answer = time.monotonic(), b""
    sock.settimeout(0.2)
    for byte in trickle * 1000:
        try:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
        except TimeoutError:
            pass
        except ConnectionResetError:
            break
        try:
            sock.send(bytes([byte]))
        except OSError:
            break
        if time.monotonic() - start > limit_s:
            break
    return time.monotonic() - start, answer


def test_a_slow_client_is_cut_off_at_the_request_deadline(hardened):
    with socket.create_connection(("127.0.0.1", hardened.port)) as sock:  # trickling headers
        sock.sendall(b"POST /measure HTTP/1.1\r\nHost: agent\r\nX-Slow: ")
        took, _ = _closed_after(sock, b"a", limit_s=4 * READ_DEADLINE_S)
    assert took < READ_DEADLINE_S + 2
    with socket.create_connection(("127.0.0.1", hardened.port)) as sock:  # trickling a body
        head = f"POST /measure HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 1000\r\n\r\n"
        sock.sendall(head.encode())
        took, answer = _closed_after(sock, b" ", limit_s=4 * READ_DEADLINE_S)
    assert took < READ_DEADLINE_S + 2 and answer.startswith(b"HTTP/1.1 408")
    assert AgentClient(hardened.url, token=TOKEN).health()["status"] == "ok"


def test_connections_beyond_the_cap_are_refused_without_a_thread(hardened):
    before = _threads(hardened.process.pid)
    idle = [socket.create_connection(("127.0.0.1", hardened.port)) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.3)
        extra = [socket.create_connection(("127.0.0.1", hardened.port)) for _ in range(20)]
        for sock in extra:
            sock.settimeout(5)
            assert sock.recv(100).startswith(b"HTTP/1.1 503")
            sock.close()
        assert _threads(hardened.process.pid) <= before + MAX_CONNECTIONS
        with pytest.raises(AgentError, match="503"):
            AgentClient(hardened.url, token=TOKEN, timeout_s=5).health()
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.3)
    assert AgentClient(hardened.url, token=TOKEN).health()["status"] == "ok"
    assert "503 (too many connections)" in hardened.log()


# ----------------------------------------------------------------------------- tokens and logs


SECRET = "SECRET-c0ffee"
BAD_TOKENS = [f"{SECRET}\r\nmore", f"{SECRET}\x01", f"{SECRET} more", f"{SECRET}\u00e9", "x" * 5000]


def test_an_unusable_token_is_refused_in_one_line_that_does_not_show_it(tmp_path, monkeypatch):
    token_file = tmp_path / "token"
    for bad in BAD_TOKENS:
        token_file.write_bytes(bad.encode("utf-8"))
        for attempt in (lambda: read_token(token_file), lambda: AgentClient("http://127.0.0.1:9", token=bad)):
            with pytest.raises(AgentError) as caught:
                attempt()
            assert SECRET not in str(caught.value) and "x" * 50 not in str(caught.value)
        monkeypatch.setenv("IOTNAS_AGENT_TOKEN", bad)
        with pytest.raises(AgentError, match="IOTNAS_AGENT_TOKEN") as caught:
            read_token(None)
        assert SECRET not in str(caught.value)
    monkeypatch.delenv("IOTNAS_AGENT_TOKEN")

    token_file.write_bytes(BAD_TOKENS[0].encode())  # the agent, and the CLI with -v (library logs shown)
    measure = [sys.executable, "-m", "iotnas", "-v", "latency", "measure", "mobilenetv2", "s4", "1",
               "--device", "http://127.0.0.1:9"]
    runs = [
        ([sys.executable, "-m", "iotnas.latency.agent", "--port", "0", "--token-file", str(token_file)], {}),
        ([*measure, "--token-file", str(token_file)], {}),
        (measure, {"IOTNAS_AGENT_TOKEN": BAD_TOKENS[1]}),
    ]
    for command, env in runs:
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env}, timeout=60,
                              check=False)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "token" in done.stderr and SECRET not in done.stdout + done.stderr


def test_the_log_has_one_line_per_request_and_never_a_token(hardened):
    wrong = f"{SECRET}-wrong"
    AgentClient(hardened.url, token=TOKEN).health()
    with pytest.raises(AgentError, match="refused"):
        AgentClient(hardened.url, token=wrong).health()
    log = hardened.log()
    assert re.search(r"127\.0\.0\.1 GET /health 200 \d+ ms", log)
    assert re.search(r"127\.0\.0\.1 GET /health 401 \d+ ms", log)
    assert TOKEN not in log and wrong not in log


def test_a_reachable_address_warns_that_http_is_plain(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "iotnas", "agent", "serve", "--host", "0.0.0.0", "--port", "0",
             "--token-file", str(token_file)],
            stdout=subprocess.PIPE, stderr=log, text=True,
        )
    try:
        port = int(process.stdout.readline().strip().rsplit(":", 1)[1])
        AgentClient(f"http://127.0.0.1:{port}", token=TOKEN).health()
    finally:
        process.terminate()
        process.wait(timeout=10)
    text = log_path.read_text()
    assert "plain HTTP" in text and "unencrypted" in text
    assert re.search(r"GET /health 200 \d+ ms", text)  # `agent serve` logs its requests
    assert TOKEN not in text


def test_a_malformed_agent_url_is_one_clean_error(cli):
    for url in ["http://[::1", "http://host:port", "http://", "http://a b", "ftp://x"]:
        with pytest.raises(AgentError) as caught:
            AgentClient(url)
        assert "\n" not in str(caught.value)
    code, _, err = cli("latency", "measure", "mobilenetv2", "s4", "1", "--device", "http://[::1")
    assert code == 2 and "malformed device URL" in err and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- fuzz


_VALUES = [
    None, True, False, 0, 1, 2, -1, 7, 10**6, 10**400, 0.0, 0.5, -1.5, 1e-9, 1e308, math.nan, math.inf, -math.inf,
    "", "x", "all", "onnxruntime", "torch", "AAAA", "é" * 3, "\x00", "1",
    [], [1], [[[]]], {}, {"a": 1}, {"threads": 1},
]


def _random_value(rng: random.Random) -> object:
    return rng.choice(_VALUES)


def _mutated(rng: random.Random, good: dict) -> dict:
    """``good`` with one to three fields replaced, removed or added, at any depth."""
    request = json.loads(json.dumps(good))
    for _ in range(rng.randint(1, 3)):
        holders = [request]
        jobs = request.get("jobs")
        for holder in (request.get("protocol"), jobs[0] if isinstance(jobs, list) and jobs else None):
            if isinstance(holder, dict):
                holders.append(holder)
                if isinstance(holder.get("settings"), dict):
                    holders.append(holder["settings"])
        holder = rng.choice(holders)
        action = rng.random()
        if action < 0.7 and holder:
            holder[rng.choice(sorted(holder))] = _random_value(rng)
        elif action < 0.85 and holder:
            del holder[rng.choice(sorted(holder))]
        else:
            holder[rng.choice(["extra", "protocol", "jobs", "runtime", "threads"])] = _random_value(rng)
    return request


def test_random_requests_get_4xx_or_2xx_and_never_crash_the_agent(hardened, tiny_onnx):
    rng = random.Random(20240611)
    good = {"protocol": FAST.to_dict(), "isolate": True, "jobs": [_job(tiny_onnx)]}
    statuses: dict[int, int] = {}
    start = time.monotonic()
    for _ in range(200):
        if rng.random() < 0.2:
            body = rng.randbytes(rng.randint(0, 300))
        else:
            body = json.dumps(_mutated(rng, good)).encode()
        status, payload = raw_post(hardened.port, body)
        statuses[status] = statuses.get(status, 0) + 1
        assert 200 <= status < 300 or 400 <= status < 500, (status, payload, body[:300])
        assert status == 200 or payload["error"]
    assert time.monotonic() - start < 60
    assert statuses.get(400, 0) > 100  # mostly refusals, as designed
    (m,) = AgentClient(hardened.url, token=TOKEN).measure_onnx([(tiny_onnx, "after")], protocol=FAST)
    assert m.target == "after"
    _no_traceback(hardened)
