"""model_int8.tflite: every family's layers in the LiteRT interpreter, trained models' accuracy, the export's files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tflite
import torch

from iotnas.arch import Arch
from iotnas.export import (
    MIN_CORRELATION,
    check_tflite,
    deploy,
    export_model,
    int8_tflite,
    run_tflite,
)
from iotnas.spaces import build
from iotnas.store import Store

from .conftest import MODEL
from .test_deploy import SMALL, _model

#: Untrained networks with calibrated int8 activations against their float32-activation selves: the largest
#: logit error, as a fraction of the largest |logit|, that int8 activations cause through about 20 layers.
UNTRAINED_TOLERANCE = 0.15
#: What each family's layers must lower to (a grouped convolution to SPLIT + CONV_2D + CONCATENATION, a
#: BatchNorm with nothing to fold into to DEPTHWISE_CONV_2D, a stride-2 max pooling's padding to PADV2).
OPERATORS = {"mobilenetv2/s6/3": {"DEPTHWISE_CONV_2D", "ADD", "PAD"}, "densenet/s3/3": {"DEPTHWISE_CONV_2D",
             "CONCATENATION"}, "resnet/s5/2": {"ADD", "PAD"}, "resnext/s3/1": {"SPLIT", "CONCATENATION"},
             "googlenet/s6/3": {"MAX_POOL_2D", "PADV2", "CONCATENATION"}, "pnasnet/s3/0": {"MAX_POOL_2D",
             "DEPTHWISE_CONV_2D", "ADD"}, "probenet/s2/3": {"MAX_POOL_2D"}}


def _normalised(dataset, images: torch.Tensor) -> torch.Tensor:
    return (images.float() - dataset.channel_mean.view(1, -1, 1, 1)) * (1.0 / dataset.channel_std.view(1, -1, 1, 1))


@pytest.mark.parametrize("key", SMALL)
def test_every_family_runs_in_litert_close_to_the_float_activations(key, cifar_small):
    deployed = deploy(_model(key), "int8")
    calibration = _normalised(cifar_small, cifar_small.train_images[:128])
    model = int8_tflite(deployed, calibration)
    assert OPERATORS[key] <= set(model.operators)
    x = _normalised(cifar_small, cifar_small.test_images[:16])
    with torch.no_grad():
        expected = deployed.module(x).numpy()
    got = run_tflite(model, x)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= UNTRAINED_TOLERANCE * np.abs(expected).max()
    assert model.input.shape == (1, 32, 32, 3) and model.output.shape == (1, 10)


def test_the_file_is_full_integer_per_channel_and_holds_the_int8_codes(cifar_small):
    key = "mobilenetv2/s6/3"
    deployed = deploy(_model(key), "int8")
    model = int8_tflite(deployed, _normalised(cifar_small, cifar_small.train_images[:64]))
    flat = tflite.Model.GetRootAsModel(model.data, 0)
    graph = flat.Subgraphs(0)
    tensors = [graph.Tensors(i) for i in range(graph.TensorsLength())]
    names = {t.Name().decode(): t for t in tensors}
    types = {t.Type() for t in tensors}
    assert types <= {tflite.TensorType.INT8, tflite.TensorType.INT32}  # no float tensor anywhere
    for io in (graph.Inputs(0), graph.Outputs(0)):
        assert tensors[io].Type() == tflite.TensorType.INT8
    stem = names["conv1/filter"]  # (out, kh, kw, in), one scale per output channel
    q = stem.Quantization()
    assert stem.ShapeAsNumpy().tolist() == [*deployed.tensors["conv1.weight"].shape[:1], 3, 3, 3]
    assert q.ScaleLength() == stem.ShapeAsNumpy()[0] and q.QuantizedDimension() == 0
    assert not q.ZeroPointAsNumpy().any()
    codes = np.frombuffer(flat.Buffers(stem.Buffer()).DataAsNumpy().tobytes(), dtype=np.int8).reshape(
        stem.ShapeAsNumpy()).transpose(0, 3, 1, 2)
    t = deployed.tensors["conv1.weight"]
    wrapped = torch.where(t.encoded.codes >= 128, t.encoded.codes - 256, t.encoded.codes)
    assert np.array_equal(codes, wrapped.numpy())  # the int8 deployed network's codes, exactly
    bias = names["conv1/bias"]
    x_scale = tensors[graph.Inputs(0)].Quantization().ScaleAsNumpy()[0]
    assert bias.Type() == tflite.TensorType.INT32
    np.testing.assert_allclose(bias.Quantization().ScaleAsNumpy(), x_scale * q.ScaleAsNumpy(), rtol=1e-6)
    depthwise = next(t for n, t in names.items() if n.endswith("/filter") and t.ShapeAsNumpy()[0] == 1)
    assert depthwise.Quantization().QuantizedDimension() == 3


def test_padding_that_tflite_same_would_shift_is_explicit(cifar_small):
    """A 3x3 stride-2 convolution padded by 1 on an even map: SAME would pad only after, PyTorch pads both sides."""
    torch.manual_seed(0)
    layer = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=2, padding=1), torch.nn.ReLU(),
                                torch.nn.MaxPool2d(3, stride=2, padding=1), torch.nn.Flatten(), torch.nn.Linear(256, 5))
    deployed = deploy(layer, "int8")
    model = int8_tflite(deployed, _normalised(cifar_small, cifar_small.train_images[:256]))
    assert {"PAD", "PADV2"} <= set(model.operators)
    x = _normalised(cifar_small, cifar_small.test_images[:8])
    with torch.no_grad():
        expected = deployed.module(x).numpy()
    # A flattened 8x8 map read by the linear layer in NHWC order: a wrong order would be far off.
    assert np.abs(run_tflite(model, x) - expected).max() <= 0.03 * np.abs(expected).max()


def test_a_layer_the_converter_cannot_emit_is_named():
    from iotnas.errors import ExportError

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Sigmoid(), torch.nn.Flatten(),
                                torch.nn.Linear(4096, 10))
    with pytest.raises(ExportError, match=r"cannot emit layer 1 \(Sigmoid\).*--no-tflite"):
        int8_tflite(deploy(model, "int8"), torch.randn(4, 3, 32, 32))


# ------------------------------------------------------------------ trained models: the accuracy acceptance


@pytest.fixture(scope="module")
def cifar_500(shared_data: Path, cifar_small):
    """The fixture's training images (same fingerprint) with 600 test images."""
    from iotnas.data import load_dataset

    return load_dataset(shared_data / "cifar10").subset(train=len(cifar_small.train_labels), test=600)


@pytest.fixture(scope="module")
def cifar_export(trained_store: Path, cifar_500, tmp_path_factory):
    out = tmp_path_factory.mktemp("tflite") / "e4m3"
    with Store.open(str(trained_store), create=False) as store:
        result = export_model(store, MODEL, format_name="e4m3", out_dir=out, dataset=cifar_500, check_images=500)
    return out, result


def test_cifar10_model_within_one_point_of_the_int8_emulation(cifar_export):
    folder, result = cifar_export
    check = result.tflite.check
    assert check.images == 500
    assert check.int8_accuracy >= 0.2  # twice chance (four short epochs): the comparison means something
    assert abs(check.accuracy - check.int8_accuracy) <= 0.01
    assert check.logit_correlation >= MIN_CORRELATION and check.agreement >= 0.8
    size = (folder / "model_int8.tflite").stat().st_size
    assert result.files["model_int8.tflite"] == result.tflite.file_bytes == size
    card = (folder / "MODEL_CARD.md").read_text()
    assert f"| `model_int8.tflite` | {size:,} |" in card
    assert f"LiteRT interpreter on 500 real test images: accuracy {check.accuracy:.2%}" in card
    assert f"q = round(x / {result.tflite.input.scale:.6g}) + {result.tflite.input.zero_point}" in card


def test_cli_json_records_the_tflite_quantization(cli, trained_store, tmp_path):
    code, out, err = cli("export", str(trained_store), MODEL, "--format", "int8", "--out", str(tmp_path / "x"),
                         "--images", "32", "--json")
    assert code == 0, err
    result = json.loads(out)
    t = result["tflite"]
    assert result["files"]["model_int8.tflite"] == t["file_bytes"]
    assert t["input"]["dtype"] == t["output"]["dtype"] == "int8"
    assert t["input"]["shape"] == [1, 32, 32, 3] and t["output"]["shape"] == [1, 10]
    assert t["input"]["scale"] > 0 and -128 <= t["input"]["zero_point"] <= 127
    assert t["calibration_images"] == 512 and t["check"]["images"] == 32
    assert t["operators"]["CONV_2D"] > 0 and t["operators"]["FULLY_CONNECTED"] == 1
    code, out, err = cli("export", str(trained_store), MODEL, "--out", str(tmp_path / "y"), "--images", "8",
                         "--no-tflite", "--json")
    assert code == 0, err
    assert json.loads(out)["tflite"] is None and not (tmp_path / "y" / "model_int8.tflite").exists()


@pytest.fixture(scope="module")
def digits_model():
    """A small ResNet trained briefly on the digits (8x8 scans, zero-padded to 32x32)."""
    from iotnas.data import load_dataset
    from iotnas.train import TrainConfig, train

    digits = load_dataset("digits")
    torch.manual_seed(0)
    model = build(Arch.parse("resnet/s5/2"), num_classes=10, in_channels=1)
    train(model, digits, TrainConfig(epochs=10, batch_size=64, threads=1), seed=0, device="cpu")
    return model.eval(), digits


def test_digits_model_within_one_point_of_the_int8_emulation(digits_model):
    model, digits = digits_model
    deployed = deploy(model, "int8")
    index = torch.linspace(0, len(digits.train_labels) - 1, 512).round().long()
    tfl = int8_tflite(deployed, _normalised(digits, digits.train_images[index]))
    x = _normalised(digits, digits.test_images)  # all 450 test images the set has
    with torch.no_grad():
        emulated = deployed.module(x)
    check = check_tflite(tfl, x, digits.test_labels, emulated)
    assert check.images == len(digits.test_labels)
    assert check.int8_accuracy > 0.5
    assert abs(check.accuracy - check.int8_accuracy) <= 0.01
    assert check.logit_correlation >= MIN_CORRELATION


def test_a_file_that_computes_another_function_is_refused(digits_model):
    # The same file judged against the emulated logits of other images: the function a wrongly
    # converted network computes, as far as the check can tell.
    from iotnas.errors import ExportError

    model, digits = digits_model
    deployed = deploy(model, "int8")
    tfl = int8_tflite(deployed, _normalised(digits, digits.train_images[:512]))
    x = _normalised(digits, digits.test_images[:200])
    with torch.no_grad():
        others = deployed.module(x.roll(1, dims=0))
    with pytest.raises(ExportError, match=r"correlation of only -?0\.\d\d on 200 test images.*conversion is wrong"):
        check_tflite(tfl, x, digits.test_labels[:200], others)
