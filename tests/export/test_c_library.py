"""The generated C library on the host: built strict C99, its logits equal ONNX Runtime's on real
CIFAR-10 test images for a model of every family and for the formats of an MCU deployment."""

from __future__ import annotations

import math
import re
import subprocess

import numpy as np
import pytest
import torch
from torch import nn

from iotnas.arch import Arch
from iotnas.cost import cost
from iotnas.errors import ExportError
from iotnas.export import deploy
from iotnas.export.c import (
    C_TOLERANCE,
    build_host,
    plan_arena,
    run_host,
    trace,
    write_c_library,
)
from iotnas.export.c._build import worst_stack
from iotnas.export.c._emit import _code_reader, _decoder, _ieee_call, runtime_source
from iotnas.formats import pack, parse_format

from .c_support import (
    FAMILY_MODELS,
    calibrated_model,
    generate,
    header_meta,
    hwc,
    normalised,
    ort_logits,
    require,
    window_kernels_model,
)

N_IMAGES = 128  # every test image of the small CIFAR-10 subset (>= 100)
#: int8, an 8-bit float, a 6-bit float (codes straddle bytes), a 4-bit float, half, a 12-bit float, float32.
FORMATS = ["int8", "e4m3", "e3m2fn", "e2m1fn", "float16", "e5m6", "float32"]


def _host_logits(c_dir, tmp_path, pixels, num_classes):
    program = build_host(c_dir, tmp_path / "model")
    return run_host(program, hwc(pixels), num_classes=num_classes)


def _assert_close(got: np.ndarray, want: np.ndarray) -> None:
    allowed = C_TOLERANCE * max(1.0, float(np.abs(want).max()))
    assert np.abs(got - want).max() <= allowed
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.99  # ties within the tolerance may flip a class


@pytest.mark.parametrize("family", sorted(FAMILY_MODELS))
def test_every_family_matches_onnx_runtime(family, cifar_small, tmp_path):
    require("gcc")
    key = FAMILY_MODELS[family]
    model = calibrated_model(key, cifar_small)
    pixels = cifar_small.test_images[:N_IMAGES]
    c_dir, _ = generate(model, key, "float32", cifar_small, tmp_path / "export")
    got = _host_logits(c_dir, tmp_path, pixels, cifar_small.num_classes)
    _assert_close(got, ort_logits(model, "float32", cifar_small, pixels))


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_matches_onnx_runtime(fmt, cifar_small, tmp_path):
    require("gcc")
    key = FAMILY_MODELS["resnet"]  # residual additions, strided 1x1 shortcuts, average pooling
    model = calibrated_model(key, cifar_small)
    pixels = cifar_small.test_images[:N_IMAGES]
    c_dir, _ = generate(model, key, fmt, cifar_small, tmp_path / "export")
    got = _host_logits(c_dir, tmp_path, pixels, cifar_small.num_classes)
    _assert_close(got, ort_logits(model, fmt, cifar_small, pixels))


def test_window_kernels_match_onnx_runtime(cifar_small, tmp_path):
    """Depthwise 5 x 5 with stride 2 and 7 x 7, a grouped 3 x 3 of 3 channels per group with
    stride 2, a dense 5 x 5: the float kernels against ONNX Runtime."""
    require("gcc")
    model = window_kernels_model()
    pixels = cifar_small.test_images[:N_IMAGES]
    c_dir, _ = generate(model, "probenet/s2/39", "float32", cifar_small, tmp_path / "export")
    got = _host_logits(c_dir, tmp_path, pixels, cifar_small.num_classes)
    _assert_close(got, ort_logits(model, "float32", cifar_small, pixels))


@pytest.mark.parametrize("fmt", ["e3m2fn", "int4"])
def test_flash_holds_the_deployed_codes_packed(fmt, cifar_small, tmp_path):
    """The weight array is the deployed network's codes in one bit stream: ceil(n * bits / 8)
    bytes, never more than the search promised; no malloc and no libm anywhere."""
    key = FAMILY_MODELS["probenet"]
    model = calibrated_model(key, cifar_small)
    deployed = deploy(model, fmt)
    c_dir, header = generate(model, key, fmt, cifar_small, tmp_path / "export")
    text = (c_dir / "iotnas_model.c").read_text()
    array = re.search(r"iotnas_weights\[(\d+)\] = \{([^}]*)\}", text)
    stored = bytes(int(b, 16) for b in re.findall(r"0x([0-9a-f]{2})", array.group(2)))
    codes = torch.cat([t.encoded.codes.reshape(-1) for t in deployed.tensors.values()])
    assert stored == pack(codes, deployed.format.bits)
    assert int(array.group(1)) == len(stored) == math.ceil(deployed.n_values * deployed.format.bits / 8)
    assert header["codes_bytes"] + header["scales_bytes"] == deployed.weight_bytes <= deployed.promised_bytes
    sources = "".join(p.read_text() for p in c_dir.iterdir())
    assert "malloc(" not in sources and "<math.h>" not in sources


@pytest.mark.parametrize("family", sorted(FAMILY_MODELS))
def test_arena_is_planned_below_eager_peak(family):
    """The liveness plan never needs more than PyTorch's eager peak (what `iotnas cost` counts),
    and never less than the largest set of tensors live at once."""
    key = FAMILY_MODELS[family]
    from iotnas.spaces import build

    deployed = deploy(build(Arch.parse(key)), "float32")
    plan = plan_arena(trace(deployed.module, in_channels=3, height=32, width=32))
    assert plan.live_peak_values <= plan.arena_values <= cost(key).peak_activation_values
    assert plan.arena_values < 1.2 * plan.live_peak_values


def test_unsupported_operator_is_named_and_nothing_is_written(cifar_small, tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.GELU(), nn.Flatten(), nn.Linear(4 * 32 * 32, 10)).eval()
    with pytest.raises(ExportError, match="GELU"):
        write_c_library(tmp_path / "c", deploy(model, "int8"), header_meta("probenet/s2/39", cifar_small))
    assert not (tmp_path / "c").exists()


def test_adaptive_average_pooling_is_a_fixed_window_or_one_clear_error():
    """Global pooling (the compact space's head) and any output size that divides the input become
    an average pooling; a size that does not divide it is named."""
    from iotnas.export.c._graph import trace

    def pooled(size) -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(size)).eval()

    (pool,) = [op for op in trace(pooled(1), in_channels=3, height=8, width=6).ops if op.kind == "avgpool"]
    assert (pool.params["kh"], pool.params["kw"], pool.params["sh"], pool.params["sw"]) == (8, 6, 8, 6)
    (pool,) = [op for op in trace(pooled((4, None)), in_channels=3, height=8, width=6).ops if op.kind == "avgpool"]
    assert (pool.params["kh"], pool.params["kw"], pool.shape) == (2, 1, (4, 4, 6))
    with pytest.raises(ExportError, match="adaptive average pooling of 8 x 6 to 3 x 3"):
        trace(pooled(3), in_channels=3, height=8, width=6)


def test_worst_stack_follows_the_deepest_path(tmp_path):
    (tmp_path / "a.ci").write_text(
        'graph: { title: "a.c"\n'
        'node: { title: "run" label: "run\\na.c:1:1\\n40 bytes (static)" }\n'
        'node: { title: "conv" label: "conv\\na.c:2:1\\n200 bytes (static)" }\n'
        'node: { title: "pool" label: "pool\\na.c:3:1\\n100 bytes (static)" }\n'
        'node: { title: "decode" label: "decode\\na.c:4:1\\n8 bytes (static)" }\n'
        'node: { title: "memcpy" label: "__builtin_memcpy\\n<built-in>" shape : ellipse }\n'
        'edge: { sourcename: "run" targetname: "conv" label: "a.c:1:2" }\n'
        'edge: { sourcename: "run" targetname: "pool" label: "a.c:1:3" }\n'
        'edge: { sourcename: "conv" targetname: "decode" label: "a.c:2:2" }\n'
        'edge: { sourcename: "pool" targetname: "memcpy" }\n}\n')
    assert worst_stack([tmp_path / "a.ci"], root="run") == 40 + 200 + 8
    (tmp_path / "b.ci").write_text('edge: { sourcename: "decode" targetname: "run" }\n')
    with pytest.raises(ExportError, match="recursive"):
        worst_stack([tmp_path / "a.ci", tmp_path / "b.ci"], root="run")


def test_c_equals_the_deployed_pytorch_network_closely(cifar_small, tmp_path):
    """Against the deployed network itself (what ONNX Runtime runs too)."""
    require("gcc")
    key = FAMILY_MODELS["densenet"]  # pre-activation BatchNorm: a per-channel scale and shift
    model = calibrated_model(key, cifar_small)
    pixels = cifar_small.test_images[:32]
    c_dir, _ = generate(model, key, "int8", cifar_small, tmp_path / "export")
    with torch.no_grad():
        want = deploy(model, "int8").module(normalised(pixels, cifar_small)).numpy()
    got = _host_logits(c_dir, tmp_path, pixels, cifar_small.num_classes)
    assert np.abs(got - want).max() <= 1e-5 * max(1.0, float(np.abs(want).max()))


#: A float32 decoder's check: codes of the stream at the edges (zeros, subnormals, normals' ends,
#: infinities, NaNs with payloads, each with both signs) and random ones; their decoded bits written.
DECODE_CHECK_C = r"""
#include <stdio.h>
#include "iotnas_ops.h"
static const uint8_t iotnas_weights[] = {@CODES@};
@READER@
@DECODER@
int main(int argc, char **argv) {
    FILE *f = fopen(argv[1], "wb");
    long differ = 0;
    (void)argc;
    for (uint32_t i = 0; i < @N@u; ++i) {
        float got, want = @REFERENCE@;
        iotnas_decode(i, 1u, 0u, &got);
        differ += memcmp(&got, &want, sizeof got) != 0;
        fwrite(&got, sizeof got, 1, f);
    }
    fclose(f);
    printf("%ld\n", differ);
    return 0;
}
"""


def test_float32_decoder_copies_the_bits_as_the_general_decoder_would(tmp_path):
    """float32's decoder copies the code's bits (a NaN made quiet, its payload dropped): the same
    floats, bit for bit, as iotnas_ieee_value gives every other float format."""
    require("gcc")
    fmt = parse_format("float32")
    edges = [0, 1, 0x3FFFFF, 0x7FFFFF, 0x800000, 0x3F800000, 0x7F7FFFFF, 0x7F800000, 0x7F800001, 0x7FC00000,
             0x7FC00001, 0x7FFFFFFF]
    rng = np.random.default_rng(0)
    codes = np.array(edges + [c | 0x80000000 for c in edges] + rng.integers(0, 2**32, 20_000).tolist(), dtype="<u4")
    (tmp_path / "iotnas_ops.h").write_text(runtime_source("iotnas_ops.h"), encoding="utf-8")
    source = (DECODE_CHECK_C.replace("@CODES@", ", ".join(str(b) for b in codes.tobytes()))
              .replace("@READER@", _code_reader(32)).replace("@DECODER@", _decoder(fmt))
              .replace("@N@", str(len(codes))).replace("@REFERENCE@", _ieee_call("code_at(i)", fmt)))
    (tmp_path / "check.c").write_text(source, encoding="utf-8")
    subprocess.run(["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", f"-I{tmp_path}", "-o",
                    str(tmp_path / "check"), str(tmp_path / "check.c")], check=True)
    out = subprocess.run([str(tmp_path / "check"), str(tmp_path / "decoded.bin")], check=True, capture_output=True,
                         text=True).stdout
    assert int(out) == 0  # equal to the general decoder's floats
    got = np.fromfile(tmp_path / "decoded.bin", dtype="<u4")
    nan = ((codes & 0x7F800000) == 0x7F800000) & ((codes & 0x7FFFFF) != 0)
    want = np.where(nan, (codes & 0x80000000) | 0x7FC00000, codes)
    assert nan.sum() >= 6 and np.array_equal(got, want)
