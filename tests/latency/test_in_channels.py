"""A 1-channel study's figures: `--in-channels 1` costs and latencies are those of a 1-channel training's model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ARCH = ("mobilenetv2", "s6", "0")


@pytest.fixture(scope="module")
def grey_model(tmp_path_factory, shared_data: Path):
    """A model trained (one short epoch) on real Fashion-MNIST, rebuilt from its checkpoint."""
    import contextlib
    import io

    from iotnas.cli.main import main
    from iotnas.train import load_trained

    out = tmp_path_factory.mktemp("grey") / "run"
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(["train", *ARCH, "--data", str(shared_data / "fashion-mnist"), "--subset", "96",
                     "--batch-size", "32", "--threads", "1", "--epochs", "1", "--out", str(out)])
    assert code == 0, err.getvalue()
    (checkpoint,) = out.rglob("checkpoint.pt")
    return load_trained(checkpoint)


def test_in_channels_1_costs_are_the_trained_models(grey_model, cli):
    from iotnas.cost import cost, count

    first = next(m for m in grey_model.model.modules() if hasattr(m, "in_channels"))
    assert first.in_channels == 1  # Fashion-MNIST is grey: the trainer built a 1-channel first layer
    counted = count(grey_model.model, (1, 32, 32))
    assert cost(grey_model.arch, in_channels=1) == counted
    assert cost(grey_model.arch).n_values > counted.n_values  # the RGB twin is another model
    code, out, err = cli("spaces", "sample", *ARCH, "--in-channels", "1", "--json")
    assert code == 0, err
    sample = json.loads(out)
    assert (sample["n_values"], sample["macs"], sample["input_shape"]) == (counted.n_values, counted.macs, [1, 32, 32])


def test_in_channels_1_latency_times_the_trained_models_graph(grey_model, cli):
    from iotnas.latency import measure_latency

    code, out, err = cli("latency", "measure", *ARCH, "--in-channels", "1", "--min-s", "0.05", "--json")
    assert code == 0, err
    measured = json.loads(out)
    assert measured["input_shape"] == [1, 1, 32, 32]
    trained = measure_latency(grey_model.model, in_channels=1)  # the trained network itself runs on that image
    assert trained.input_shape == (1, 1, 32, 32)
    rgb = measure_latency(grey_model.arch)
    assert rgb.input_shape == (1, 3, 32, 32)
    one = measure_latency(grey_model.arch, in_channels=1)
    assert one.key.endswith("|1x32x32") and rgb.key.endswith("|3x32x32") and one.key != rgb.key


def test_in_channels_1_predictions_are_of_the_trained_models_graph(grey_model, cli, tmp_path):
    """A predictor calibrated for grey images predicts the graph a 1-channel training built, and says so."""
    from iotnas.latency.calibrate import calibrate_nodes
    from iotnas.latency.nodes import profile_onnx
    from iotnas.latency.predictor import InputShape
    from iotnas.latency.runtimes import export_onnx

    from .conftest import FAST

    predictor, calibration = calibrate_nodes(["mobilenetv2/s6"], networks=5, held_out=0, rounds=1, protocol=FAST,
                                             profile_runs=3, shape=InputShape(channels=1))
    assert {p.nodes[0].in_shapes[0] for p in calibration.profiles.values()} == {(1, 1, 32, 32)}
    path = tmp_path / "grey.json"
    predictor.save(path)
    assert json.loads(path.read_text())["input"] == {"channels": 1, "size": 32, "classes": 10}

    def graph(nodes):
        return [(n.op, n.in_shapes, n.out_shape, n.attrs) for n in nodes]

    trained = profile_onnx(export_onnx(grey_model.model, input_shape=(1, 1, 32, 32)), runs=0).nodes
    assert graph(predictor.nodes_of(grey_model.arch)) == graph(trained)
    code, out, err = cli("latency", "predict", str(path), *ARCH, "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["input"]["channels"] == 1
    assert shown["latency_ms"] == pytest.approx(predictor.predict_graphs([trained])[0], rel=1e-9)
    # --in-channels overrides the recorded shape: the RGB twin is another graph.
    code, out, err = cli("latency", "predict", str(path), *ARCH, "--in-channels", "3", "--json")
    assert code == 0, err
    assert json.loads(out)["input"]["channels"] == 3
    rgb = predictor.with_input(InputShape(channels=3)).nodes_of(grey_model.arch)
    assert rgb[0].in_shapes[0] == (1, 3, 32, 32) and graph(rgb) != graph(trained)
