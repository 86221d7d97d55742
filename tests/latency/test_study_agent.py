"""A study's agent token: from [device] token_file or --token-file, to a real agent on 127.0.0.1."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from iotnas.arch import Arch
from iotnas.search.latency_sources import make_latency_source
from iotnas.study import load_study

from .conftest import TOKEN, RunningAgent

STUDY = """\
name = "remote"
store = "remote.db"
[device]
kind = "agent"
url = "{url}"
{token_line}
[constraints]
max_latency_ms = 0.000001      # every model is too slow: the search times candidates and trains none
[space]
laws = ["mobilenetv2/s6"]
pool_per_law = 2
[strategy]
name = "laws"
[budget]
candidates = 2
trainings = 1
"""


@pytest.fixture(scope="module")
def roomy_agent(tmp_path_factory) -> Iterator[RunningAgent]:
    """An agent that takes whole networks (the shared one refuses requests over 64 KiB)."""
    running = RunningAgent(tmp_path_factory.mktemp("agent"), max_request_mb=16.0)
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def _no_token_in_the_environment(monkeypatch):
    monkeypatch.delenv("IOTNAS_AGENT_TOKEN", raising=False)


def _study(folder, url, token_line=""):
    path = folder / "remote.toml"
    path.write_text(STUDY.format(url=url, token_line=token_line))
    return path


def _measures(agent: RunningAgent) -> int:
    return len(re.findall(r"POST /measure 200", agent.log()))


def _one_clean_line(code, err):
    assert code == 2, err
    assert err.startswith("iotnas: error:") and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_the_study_token_file_reaches_the_agent(tmp_path, roomy_agent):
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "token").write_text(TOKEN + "\n")
    study = load_study(_study(tmp_path, roomy_agent.url, 'token_file = "secret/token"'))  # relative to the file
    source = make_latency_source(study, SimpleNamespace(num_classes=10, in_channels=1))
    before = _measures(roomy_agent)
    latency = source.latency(Arch.parse("mobilenetv2/s6/0"))
    assert latency.source == "measured" and latency.median_ms > 0 and latency.device_key == source.key
    assert source.key.startswith("agent:") and roomy_agent.url not in source.key  # the device, not its address
    assert _measures(roomy_agent) == before + 1


def test_the_command_line_token_file_reaches_the_agent(tmp_path, roomy_agent, cli):
    (tmp_path / "wrong").write_text("not-the-token\n")
    given = tmp_path / "given"
    given.write_text(TOKEN + "\n")
    study = _study(tmp_path, roomy_agent.url, 'token_file = "wrong"')  # --token-file replaces it
    before = _measures(roomy_agent)
    code, out, err = cli("search", str(study), "--token-file", str(given))
    assert code == 0, err
    assert _measures(roomy_agent) >= before + 1
    assert TOKEN not in out + err


@pytest.mark.parametrize("content", [None, b"", b"two words", "t\u00f6ken".encode()], ids=["missing", "empty", "space", "non-ascii"])
@pytest.mark.parametrize("where", ["study", "command line"])
def test_a_missing_or_bad_token_file_is_one_line_and_creates_nothing(tmp_path, roomy_agent, cli, content, where):
    token = tmp_path / "token"
    if content is not None:
        token.write_bytes(content)
    if where == "study":
        study = _study(tmp_path, roomy_agent.url, 'token_file = "token"')
        code, out, err = cli("search", str(study))
    else:
        study = _study(tmp_path, roomy_agent.url)
        code, out, err = cli("search", str(study), "--token-file", str(token))
    _one_clean_line(code, err)
    assert "token file" in err and str(token) in err
    if content:
        assert content.decode("latin-1") not in out + err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({study.name, *([token.name] if content is not None else [])})


def test_a_wrong_token_is_refused_without_being_shown(tmp_path, roomy_agent, cli):
    (tmp_path / "token").write_text("a-wrong-token-value\n")
    code, out, err = cli("search", str(_study(tmp_path, roomy_agent.url, 'token_file = "token"')))
    _one_clean_line(code, err)
    assert "refused" in err and "a-wrong-token-value" not in out + err


def test_the_command_line_token_file_reaches_every_worker(tmp_path, roomy_agent, cli):
    given = tmp_path / "given"
    given.write_text(TOKEN + "\n")
    study = _study(tmp_path, roomy_agent.url)  # no token in the file nor in the environment
    before = {status: len(re.findall(f"GET /health {status}", roomy_agent.log())) for status in (200, 401)}
    code, out, err = cli("search", str(study), "--token-file", str(given), "--workers", "2")
    assert code == 0, err
    # Here and in two spawned workers, the latency source asks the agent who it is: with the token.
    log = roomy_agent.log()
    assert len(re.findall("GET /health 200", log)) == before[200] + 3
    assert len(re.findall("GET /health 401", log)) == before[401]


def _search_twice(tmp_path, cli, first_url: str, second_url: str, *, between=None):
    (tmp_path / "token").write_text(TOKEN + "\n")
    study = _study(tmp_path, first_url, 'token_file = "token"')
    assert cli("search", str(study))[0] == 0
    if between is not None:
        between(tmp_path / "remote.db")
    study.write_text(study.read_text().replace(first_url, second_url))
    return cli("search", str(study))


def test_the_same_device_under_another_url_is_accepted_and_keeps_its_timings(tmp_path, roomy_agent, cli):
    from iotnas.store import Store

    before = _measures(roomy_agent)
    code, out, err = _search_twice(tmp_path, cli, roomy_agent.url, roomy_agent.url.replace("127.0.0.1", "localhost"))
    assert code == 0, err
    assert _measures(roomy_agent) - before == 2  # the second search found both figures under the device's key
    with Store.open(str(tmp_path / "remote.db"), read_only=True) as store:
        (key,) = {lat.device_key for lat in store.latencies().values()}
        identity = json.loads(store.meta()["device_identity"])
    assert "127.0.0.1" not in key and identity["hostname"] == socket.gethostname()
    assert identity["runtime"] == "onnxruntime" and identity["onnxruntime"] and identity["cpu"]


def test_another_device_is_refused_naming_what_differs(tmp_path, roomy_agent, cli):
    from iotnas.store import Store

    def timed_on_a_board(path):  # the study's first search ran on another device
        with Store.open(str(path)) as store:
            identity = json.loads(store.meta()["device_identity"])
            store.set_meta("device_identity", json.dumps({**identity, "cpu": "ARMv7 Processor rev 4 (v7l)"}))

    code, out, err = _search_twice(tmp_path, cli, roomy_agent.url, roomy_agent.url, between=timed_on_a_board)
    _one_clean_line(code, err)
    assert "another device" in err and "cpu 'ARMv7 Processor rev 4 (v7l)' ->" in err
