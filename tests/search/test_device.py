"""The [device] table: combinations refused on load, what the fingerprint leaves out, and what a refusal names."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import pytest

from iotnas.errors import ConfigError, StoreError
from iotnas.search import open_store
from iotnas.store import Store
from iotnas.study import load_study, parse_study, study_changes

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
AGENT = {"kind": "agent", "url": "http://127.0.0.1:8765"}


def _one_clean_line(code, err):
    assert code == 2, err
    assert err.startswith("iotnas: error:") and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_example_fingerprints_are_unchanged():
    """Stores made from the examples before url and token_file left the fingerprint still open."""
    import dataclasses

    from iotnas.study import PrecisionSpec

    found = {path.stem: load_study(path).fingerprint for path in sorted(EXAMPLES.glob("*.toml"))}
    assert found == {"cifar10": "0d929f451c711210", "paper-tabular": "8e0c370b0ed7a3c3",
                     "quickstart": "a8bc94e6bcfa0a95"}  # cifar10 and quickstart now allow narrower formats
    # the quickstart as it was (float32 only, no [precision]) keeps its fingerprint: keys added later
    # (precision.winner, precision.test_images) are hashed only when set to something else than their default
    before = dataclasses.replace(load_study(EXAMPLES / "quickstart.toml"), formats=("float32",),
                                 precision=PrecisionSpec())
    assert before.fingerprint == "4e4437519a7094c1"
    assert dataclasses.replace(before, precision=PrecisionSpec(winner="most_accurate")).fingerprint != before.fingerprint


@pytest.mark.parametrize(
    "raw, needle",
    [
        ({"device": {**AGENT, "runtime": "torch"}}, "device.runtime"),
        ({"device": {"kind": "local", "url": "http://127.0.0.1:8765"}}, "device.url"),
        ({"device": {"kind": "predictor", "predictor": "p.json", "url": "http://127.0.0.1:8765"}}, "device.url"),
        ({"device": {"kind": "local", "measure": "every"}}, "device.measure"),  # hybrid keys need a predictor
        ({"device": {"kind": "predictor", "predictor": "p.json", "margin": 0.2}}, "device.margin"),
        ({"device": {"kind": "local", "predictor": "p.json", "measure": "some"}}, "device.measure"),
        ({"device": {"kind": "local", "token_file": "token"}}, "device.token_file"),
        ({"device": {"kind": "predictor", "predictor": "p.json", "token_file": "token"}}, "device.token_file"),
        ({"device": {"kind": "released"}}, "device.kind"),  # released timings in train mode
        ({"device": {**AGENT, "token_file": ""}}, "device.token_file"),
        ({"device": {"kind": "predictor", "predictor": "p.json", "min_s": 0.1}}, "device.min_s"),  # nothing timed
        ({"device": {"kind": "local", "min_s": 0}}, "device.min_s"),
        ({"device": {"kind": "local", "min_s": 86400}}, "device.min_s"),
        ({"device": {"kind": "predictor", "predictor": "p.json", "sessions": 4}}, "device.sessions"),
        ({"device": {"kind": "local", "sessions": 0}}, "device.sessions"),
        ({"device": {"kind": "local", "sessions": 65}}, "device.sessions"),
        ({"device": {"kind": "local", "sessions": 2.5}}, "device.sessions"),
    ],
)
def test_impossible_device_combinations_are_named(raw, needle):
    with pytest.raises(ConfigError) as info:
        parse_study(raw)
    assert str(info.value).startswith(needle)


def test_an_agent_with_torch_is_refused_before_anything_is_created(tmp_path, cli):
    study = tmp_path / "s.toml"
    study.write_text('name = "s"\n[device]\nkind = "agent"\nurl = "http://127.0.0.1:9"\nruntime = "torch"\n')
    code, _, err = cli("search", str(study))
    _one_clean_line(code, err)
    assert "device.runtime" in err and "ONNX" in err
    assert list(tmp_path.iterdir()) == [study]


def test_a_token_file_for_a_device_without_an_agent_is_refused(tmp_path, cli):
    study = tmp_path / "s.toml"
    study.write_text('name = "s"\n')
    with pytest.raises(ConfigError, match="--token-file"):
        load_study(study, token_file=tmp_path / "token")
    code, _, err = cli("search", str(study), "--token-file", str(tmp_path / "token"))
    _one_clean_line(code, err)
    assert "--token-file" in err and list(tmp_path.iterdir()) == [study]


def test_the_token_file_is_resolved_and_reads_back(tmp_path):
    study_file = tmp_path / "sub" / "s.toml"
    study_file.parent.mkdir()
    study_file.write_text('name = "s"\n[device]\nkind = "agent"\nurl = "http://127.0.0.1:9"\ntoken_file = "tok"\n')
    study = load_study(study_file)
    assert study.resolve(study.device.token_file) == tmp_path / "sub" / "tok"
    assert parse_study(study.to_dict(), base_dir=study.base_dir) == study
    given = load_study(study_file, token_file="elsewhere/tok")  # a command line's: from the working directory
    assert given.device.token_file == str(Path.cwd() / "elsewhere" / "tok")
    assert given.fingerprint == study.fingerprint


def test_url_and_token_file_are_not_in_the_fingerprint_the_device_is():
    base = parse_study({"name": "x", "device": AGENT})
    moved = parse_study({"name": "x", "device": {**AGENT, "url": "http://localhost:8765/", "token_file": "t"}})
    assert moved.fingerprint == base.fingerprint
    for other in ({**AGENT, "threads": 2}, {"kind": "local"}):
        assert parse_study({"name": "x", "device": other}).fingerprint != base.fingerprint
    for steadier in ({**AGENT, "min_s": 5.0}, {**AGENT, "sessions": 16}):
        timed_longer = parse_study({"name": "x", "device": steadier})
        assert timed_longer.fingerprint == base.fingerprint  # a longer timing measures the same latency
        assert study_changes(base.to_dict(), timed_longer.to_dict()) == []
    # The latency figures' identity keeps the URL: stores made before hold their figures under it.
    assert base.device.key == "agent:http://127.0.0.1:8765:onnxruntime:t1"


def test_study_changes_names_each_setting_with_both_values():
    old = parse_study({"name": "x", "budget": {"trainings": 20}, "device": AGENT}).to_dict()
    new = parse_study({
        "name": "x", "budget": {"trainings": 30}, "constraints": {"max_latency_ms": 5},
        "training": {"lr": 0.2}, "space": {"laws": ["densenet/s3", "mobilenetv2/s4", "mobilenetv2/s5", "mobilenetv2/s6"]},
        "device": {**AGENT, "url": "http://localhost:1"}, "store": "elsewhere.db", "workers": {"poll_s": 5.0},
    }).to_dict()
    changes = study_changes(old, new)
    assert changes == [
        "budget.trainings: 20 -> 30",
        "constraints.max_latency_ms: unset -> 5.0",
        'space.laws: ["all"] -> ["densenet/s3", "mobilenetv2/s4", "mobilenetv2/s5", "mobi...',
        "training.lr: unset -> 0.2",
    ]
    assert study_changes(new, new) == [] and study_changes(old, old) == []


def test_a_moved_agent_keeps_its_store(tmp_path):
    """127.0.0.1 -> localhost: the same store, and the figures stored for the device stay."""
    from iotnas.store import POOLED, Candidate, Latency

    first = parse_study({"name": "s", "store": "s.db", "device": AGENT}, base_dir=str(tmp_path))
    with open_store(first) as store:
        store.set_study(first)
        store.add_candidates([Candidate(key="densenet/s3/1", arch_json="{}", space="densenet", law="s3", arch_id=1,
                                        n_values=10, macs=5, flops=7, peak_activation_bytes=100, status=POOLED,
                                        reason=None, proposed_index=None)])
        store.add_latency(Latency("densenet/s3/1", first.device.key, "measured", 1.5, {}))
    moved = parse_study({"name": "s", "store": "s.db", "device": {**AGENT, "url": "http://localhost:8765"}},
                        base_dir=str(tmp_path))
    with open_store(moved) as store:
        assert store.study().device.url == AGENT["url"]
        assert store.latencies()["densenet/s3/1"].median_ms == 1.5


def _fingerprint_with_url(study) -> str:
    """The fingerprint as iotnas computed it while the device URL counted."""
    payload = asdict(study)
    for volatile in ("store", "base_dir", "workers"):
        payload.pop(volatile)
    payload["device"].pop("token_file")
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def test_a_store_fingerprinted_with_its_url_still_opens_and_a_real_change_is_named(tmp_path):
    study = parse_study({"name": "s", "store": "s.db", "device": AGENT}, base_dir=str(tmp_path))
    assert _fingerprint_with_url(study) != study.fingerprint
    with Store.open(str(tmp_path / "s.db"), study_name="s", fingerprint=_fingerprint_with_url(study)) as store:
        store.set_study(study)
    open_store(study).close()
    changed = parse_study({"name": "s", "store": "s.db", "device": {**AGENT, "threads": 2}}, base_dir=str(tmp_path))
    with pytest.raises(StoreError, match=r"settings changed: device.threads: 1 -> 2\)"):
        open_store(changed)


def test_without_a_recorded_study_the_refusal_is_as_before(tmp_path):
    study = parse_study({"name": "s", "store": "s.db"}, base_dir=str(tmp_path))
    Store.open(str(tmp_path / "s.db"), study_name="s", fingerprint="0" * 16).close()  # never recorded its study
    with pytest.raises(StoreError, match=r"\(its settings changed\); use a new store path"):
        open_store(study)


def _tabular(released_dir, trainings: int) -> str:
    return (f'name = "changed"\nmode = "tabular"\nreleased = "{released_dir}"\n[space]\nlaws = ["mobilenetv2/s4"]\n'
            f'[strategy]\nname = "laws"\n[budget]\ntrainings = {trainings}\n')


def test_the_refusal_names_the_changed_setting(tmp_path, cli, released_dir):
    study = tmp_path / "changed.toml"
    study.write_text(_tabular(released_dir, 20))
    code, _, err = cli("search", str(study))
    assert code == 0, err
    study.write_text(_tabular(released_dir, 30))
    code, _, err = cli("search", str(study))
    _one_clean_line(code, err)
    assert "was created by a different version of study 'changed'" in err
    assert "(its settings changed: budget.trainings: 20 -> 30)" in err


def test_each_candidate_is_timed_for_the_study_s_min_s():
    """``[device] min_s`` is how long a search times each proposal (1 s unless set), with >= 50 runs: a
    twentieth of the default times a small network in far fewer runs."""
    from iotnas.arch import Arch
    from iotnas.data import load_dataset
    from iotnas.search.latency_sources import MeasuredLatency

    digits = load_dataset("digits")
    runs = {}
    for device in ({"kind": "local"}, {"kind": "local", "min_s": 0.05}):
        study = parse_study({"name": "x", "data": {"dataset": "digits"}, "device": device})
        figure = MeasuredLatency(study, digits).latency(Arch("probenet", "s2", 3))
        assert figure.source == "measured" and figure.detail["n_runs"] >= 50
        runs[device.get("min_s")] = figure.detail["n_runs"]
    assert runs[0.05] * 4 < runs[None], runs


def test_each_candidate_is_timed_in_the_study_s_sessions():
    """``[device] sessions`` times each proposal in that many runtime sessions (one unless set)."""
    from iotnas.arch import Arch
    from iotnas.data import load_dataset
    from iotnas.search.latency_sources import MeasuredLatency

    digits = load_dataset("digits")
    for device, sessions in (({"kind": "local", "min_s": 0.05}, 1), ({"kind": "local", "min_s": 0.05, "sessions": 3}, 3)):
        study = parse_study({"name": "x", "data": {"dataset": "digits"}, "device": device})
        figure = MeasuredLatency(study, digits).latency(Arch("probenet", "s2", 3))
        assert figure.detail["n_sessions"] == sessions and figure.detail["n_runs"] >= 50 * sessions
