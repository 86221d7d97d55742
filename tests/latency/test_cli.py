"""The latency and agent commands, end to end (in-process CLI; a real agent process for serve)."""

from __future__ import annotations

import json
import subprocess
import sys

from iotnas.latency import AgentClient
from iotnas.latency.predictor import FlopsPredictor

from .conftest import TOKEN


def test_measure_prints_the_protocol_summary_as_json(cli):
    code, out, err = cli("latency", "measure", "mobilenetv2", "s6", "1", "--min-s", "0", "--json")
    assert code == 0, err
    m = json.loads(out)
    assert m["target"] == "mobilenetv2/s6/1" and m["runtime"] == "onnxruntime" and m["n_runs"] >= 50
    assert m["settings"]["threads"] == 1 and m["environment"]["cpu"] and m["n_sessions"] == 1
    code, out, err = cli("latency", "measure", "mobilenetv2", "s6", "1", "--min-s", "0", "--sessions", "3", "--json")
    assert code == 0, err
    m = json.loads(out)
    assert m["n_sessions"] == 3 and m["n_runs"] >= 3 * 50


def test_predict_with_a_saved_predictor(cli, tmp_path):
    path = tmp_path / "flops.json"
    FlopsPredictor(slope=1e-6, intercept=0.5, info={}).save(path)
    code, out, err = cli("latency", "predict", str(path), "mobilenetv2", "s4", "39", "--json")
    assert code == 0, err
    from iotnas.cost import cost

    assert json.loads(out)["latency_ms"] == 1e-6 * cost("mobilenetv2/s4/39").flops + 0.5


def test_user_mistakes_are_one_clean_line(cli, tmp_path):
    for args in [
        ("latency", "predict", str(tmp_path / "missing.json"), "mobilenetv2", "s4", "39"),
        ("latency", "measure", "nosuchspace", "s1", "1"),
        ("latency", "measure", "mobilenetv2", "s4", "1", "--runtime", "tflite"),
        ("latency", "measure", "mobilenetv2", "s4", "1", "--device", "http://127.0.0.1:9"),
        ("latency", "calibrate", "--out", str(tmp_path / "p.json"), "--released", str(tmp_path / "none.json")),
    ]:
        code, out, err = cli(*args)
        assert code == 2 and err.startswith("iotnas: error:") and len(err.strip().splitlines()) == 1, (args, err)


def test_calibrate_for_a_study_builds_networks_for_its_data(cli, tmp_path):
    """digits is grey: the predictor is calibrated for 1-channel images of 10 classes, from the study's laws."""
    study = tmp_path / "grey.toml"
    study.write_text('name = "grey"\nstore = "grey.db"\n[data]\ndataset = "digits"\n'
                     '[space]\nlaws = ["probenet/s2"]\n[device]\nkind = "local"\nsessions = 2\n')
    out_path = tmp_path / "p.json"
    code, out, err = cli("latency", "calibrate", "--study", str(study), "--in-channels", "3", "--out", str(out_path))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--in-channels 3" in err and "1x32x32" in err, err
    assert not out_path.exists()
    code, out, err = cli("latency", "calibrate", "--study", str(study), "--networks", "5", "--held-out", "0",
                         "--rounds", "1", "--out", str(out_path))
    assert code == 0, err
    saved = json.loads(out_path.read_text())
    assert saved["input"] == {"channels": 1, "size": 32, "classes": 10}
    assert {key.rsplit("/", 1)[0] for key in saved["info"]["calibration_archs"]} == {"probenet/s2"}
    assert "1x32x32 images, 10 classes" in out
    assert saved["info"]["sessions"] == 2  # timed as the study's device times: two sessions per network
    # The released timings are of RGB CIFAR-10 networks: another shape is refused before any work.
    code, out, err = cli("latency", "calibrate", "--out", str(tmp_path / "r.json"), "--released",
                         str(tmp_path / "results_RaspPi.json"), "--in-channels", "1")
    assert code == 2 and "--released" in err and "--in-channels" in err and len(err.strip().splitlines()) == 1


def test_agent_serve_command_round_trip(tmp_path, tiny_onnx):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    process = subprocess.Popen(
        [sys.executable, "-m", "iotnas", "agent", "serve", "--port", "0", "--token-file", str(token_file)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        url = process.stdout.readline().strip().removeprefix("listening on ")
        client = AgentClient(url, token=TOKEN)
        assert client.health()["status"] == "ok"
        from .conftest import FAST

        (m,) = client.measure_onnx([(tiny_onnx, "tiny")], protocol=FAST)
        assert m.target == "tiny" and m.n_runs >= FAST.min_runs
    finally:
        process.terminate()
        process.wait(timeout=10)
