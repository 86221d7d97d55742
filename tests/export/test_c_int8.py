"""The int8 C library: TensorFlow Lite's integer arithmetic on the int8 TFLite model, equal to
LiteRT's reference kernels on real CIFAR-10 test images for a model of every family, on the host
and on emulated Cortex-M4F and Cortex-M7 boards."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import tflite
import torch
from torch import nn

from iotnas.arch import Arch
from iotnas.errors import ExportError
from iotnas.export import deploy
from iotnas.export._tflite import TensorQuantization, TfliteFile, int8_tflite
from iotnas.export._tflite_check import run_tflite
from iotnas.export._tflite_schema import FlatModel, Quantization
from iotnas.export.c import (
    INT8_TOLERANCE_STEPS,
    TARGETS,
    arch_device_budget,
    build_host,
    build_target,
    check_int8_c_library,
    device_budget,
    int8_graph,
    run_host,
    run_qemu,
    write_int8_c_library,
)
from iotnas.export.c._int8 import quantize_multiplier

from .c_support import (
    FAMILY_MODELS,
    calibrated_model,
    header_meta,
    hwc,
    normalised,
    require,
    window_kernels_model,
)

KIB = 1024
N_IMAGES = 128  # every test image of the small CIFAR-10 subset (>= 100)
N_CALIBRATION = 256  # training images the activation ranges come from


def _int8_model(family: str, dataset):
    key = FAMILY_MODELS[family]
    model = calibrated_model(key, dataset)
    calibration = normalised(dataset.train_images[-N_CALIBRATION:], dataset)
    return key, int8_tflite(deploy(model, "int8"), calibration)


@pytest.fixture(scope="module")
def small(cifar_small, tmp_path_factory):
    """The int8 library of the smallest family model, written once for the board tests."""
    key, model = _int8_model("probenet", cifar_small)
    folder = tmp_path_factory.mktemp("int8") / "c"
    write_int8_c_library(folder, model, header_meta(key, cifar_small))
    return folder, model


@pytest.mark.parametrize("family", sorted(FAMILY_MODELS))
def test_every_family_matches_litert_reference_kernels(family, cifar_small, tmp_path):
    """Same integer arithmetic: every layer's codes are LiteRT's, except that LiteRT's reference
    linear layer requantises in double-precision float where TensorFlow Lite Micro (and this
    library) use the fixed-point multiplier, which moves a logit by one step on a few images."""
    require("gcc")
    key, model = _int8_model(family, cifar_small)
    pixels = cifar_small.test_images[:N_IMAGES]
    write_int8_c_library(tmp_path / "c", model, header_meta(key, cifar_small))
    check = check_int8_c_library(tmp_path / "c", model, hwc(pixels), normalised(pixels, cifar_small))
    assert check.images == N_IMAGES
    assert check.allowed_abs_diff == pytest.approx(INT8_TOLERANCE_STEPS * model.output.scale, rel=1e-2)
    assert check.max_abs_diff <= check.allowed_abs_diff
    assert check.agreement >= 0.99
    got = run_host(build_host(tmp_path / "c", tmp_path / "model"), hwc(pixels), num_classes=10)
    want = run_tflite(model, normalised(pixels, cifar_small), reference_kernels=True)
    steps = np.rint(np.abs(got - want) / model.output.scale)
    assert (steps > 0).mean() <= 0.02  # of all logits: the rare ties of the two roundings


def test_lowerings_beyond_the_families(cifar_small, tmp_path):
    """Depthwise with a channel multiplier, a grouped convolution after an explicit pad (SPLIT of a
    PAD), max pooling padded with -128 (PADV2) and by SAME, a ReLU between two scales, ReLU6 fused,
    average pooling that counts its padding: each as LiteRT computes it."""
    require("gcc")
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU6(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=8),  # depthwise, 2 outputs per input channel
        nn.MaxPool2d(3, stride=1, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=4),
        nn.AvgPool2d(3, stride=1, padding=1),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Flatten(), nn.Linear(16 * 4 * 4, 10)).eval()
    model = int8_tflite(deploy(model, "int8"), normalised(cifar_small.train_images[-N_CALIBRATION:], cifar_small))
    assert {"DEPTHWISE_CONV_2D", "SPLIT", "PAD", "PADV2", "RELU", "AVERAGE_POOL_2D"} <= set(model.operators)
    pixels = cifar_small.test_images[:N_IMAGES]
    write_int8_c_library(tmp_path / "c", model, header_meta("probenet/s2/39", cifar_small))
    check = check_int8_c_library(tmp_path / "c", model, hwc(pixels), normalised(pixels, cifar_small))
    assert check.max_abs_diff <= check.allowed_abs_diff and check.agreement >= 0.99


def test_window_kernels_match_litert_reference(cifar_small, tmp_path):
    """The window kernels (interior without checks, borders reading the zero point, the zero
    point's share folded into the bias) compute LiteRT's integers."""
    require("gcc")
    calibration = normalised(cifar_small.train_images[-N_CALIBRATION:], cifar_small)
    model = int8_tflite(deploy(window_kernels_model(), "int8"), calibration)
    assert {"DEPTHWISE_CONV_2D", "SPLIT", "CONV_2D"} <= set(model.operators)
    graph = int8_graph(model.data)
    assert {op.params["kh"] for op in graph.ops if op.kind == "depthwise"} == {5, 7}
    assert any(op.params["in_zp"] != -128 for op in graph.ops if op.kind in ("conv", "depthwise"))
    pixels = cifar_small.test_images[:N_IMAGES]
    write_int8_c_library(tmp_path / "c", model, header_meta("probenet/s2/39", cifar_small))
    check = check_int8_c_library(tmp_path / "c", model, hwc(pixels), normalised(pixels, cifar_small))
    assert check.max_abs_diff <= check.allowed_abs_diff and check.agreement >= 0.99


def test_close_to_litert_default_kernels(small, cifar_small, tmp_path):
    """LiteRT's optimised kernels (XNNPACK) requantise in their own way: the same class, logits a
    few output steps apart at most."""
    require("gcc")
    folder, model = small
    pixels = cifar_small.test_images[:N_IMAGES]
    got = run_host(build_host(folder, tmp_path / "model"), hwc(pixels), num_classes=10)
    want = run_tflite(model, normalised(pixels, cifar_small))
    assert np.abs(got - want).max() <= 4 * model.output.scale
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.97


@pytest.mark.parametrize("target", ["cortex-m4", "cortex-m7"])
def test_qemu_logits_equal_the_host_build(target, small, cifar_small, tmp_path):
    require("gcc", "arm-none-eabi-gcc", "qemu-system-arm")
    folder, _ = small
    pixels = hwc(cifar_small.test_images[:6])  # emulation is slow
    elf = build_target(folder, tmp_path / f"{target}.elf", TARGETS[target])
    on_board = run_qemu(elf, TARGETS[target], pixels, num_classes=10)
    host = run_host(build_host(folder, tmp_path / "host"), pixels, num_classes=10)
    np.testing.assert_array_equal(on_board, host)  # integers, then one float multiply per logit


def test_device_budget_fits_the_promise(small, cifar_small, tmp_path):
    """Flash: the int8 filters plus per-channel biases, multipliers and shifts, and the kernels,
    within the promised weight bytes + 16 KiB; RAM: a byte arena, a quarter of the float one."""
    require("arm-none-eabi-gcc", "arm-none-eabi-size")
    folder, model = small
    key = FAMILY_MODELS["probenet"]
    deployed = deploy(calibrated_model(key, cifar_small), "int8")
    budget = device_budget(folder, TARGETS["cortex-m4"])
    graph = int8_graph(model.data)
    filters = sum(op.params["filter"].size for op in graph.ops if "filter" in op.params)
    assert filters <= deployed.n_values  # the deployed codes, one byte each (biases go to int32)
    assert filters < budget.rodata_bytes
    assert budget.flash_bytes <= deployed.promised_bytes + 16 * KIB
    header = (folder / "iotnas_model.h").read_text()
    arena = int(header.split("#define IOTNAS_ARENA_BYTES ")[1].split("u")[0])
    assert arena <= budget.bss_bytes <= arena + 64
    assert 0 < budget.stack_bytes <= 1 * KIB


def test_sizing_before_training_gives_the_trained_figures(small, cifar_small):
    """What a study's flash and RAM limits read (an untrained network calibrated on random images)
    is what the export of the calibrated network reports: values change no size."""
    require("arm-none-eabi-gcc", "arm-none-eabi-size")
    folder, _ = small
    exported = device_budget(folder, TARGETS["cortex-m4"])
    sized = arch_device_budget(Arch.parse(FAMILY_MODELS["probenet"]), "int8")
    assert (sized.flash_bytes, sized.ram_bytes) == (exported.flash_bytes, exported.ram_bytes)


def test_unsupported_operator_is_named_and_nothing_is_written(cifar_small, tmp_path):
    flat = FlatModel()
    q = Quantization(scale=(0.1,), zero_point=(0,))
    x = flat.tensor("x", (1, 32, 32, 3), np.int8, quantization=q)
    y = flat.tensor("y", (1, 32, 32, 3), np.int8, quantization=q)
    flat.operator(tflite.BuiltinOperator.MUL, [x, x], [y], version=2)
    flat.inputs, flat.outputs = [x], [y]
    edge = TensorQuantization(shape=(1, 32, 32, 3), scale=0.1, zero_point=0)
    model = TfliteFile(data=flat.serialize(description="mul"), input=edge, output=edge, operators={"MUL": 1},
                       constant_bytes=0, calibration_images=0)
    with pytest.raises(ExportError, match="operator MUL"):
        write_int8_c_library(tmp_path / "c", model, header_meta("probenet/s2/39", cifar_small))
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize(("real", "expected"), [
    (0.5, (1 << 30, 0)), (1.0, (1 << 30, 1)), (0.75, (3 << 29, 0)), (0.0, (0, 0)),
    (2.0**-40, (0, 0)),  # below 2^-31 TensorFlow Lite flushes to zero
    (1.0 - 2.0**-33, (1 << 30, 1)),  # the mantissa rounds up to 1: halved, one more shift
])
def test_quantize_multiplier_follows_tensorflow_lite(real, expected):
    assert quantize_multiplier(real) == expected


#: TensorFlow Lite's MultiplyByQuantizedMultiplier as gemmlowp writes it (a 64-bit nudged product
#: divided toward zero, then a rounding right shift by mask and threshold): the reference that the
#: library's shorter form must equal.
GEMMLOWP_REQUANTIZE_C = r"""
static int32_t gemmlowp_requantize(int32_t x, int32_t multiplier, int32_t shift) {
    const int32_t left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
    const int32_t a = (int32_t)((int64_t)x * ((int64_t)1 << left));
    int32_t high;
    if (a == INT32_MIN && multiplier == INT32_MIN) {
        high = INT32_MAX;
    } else {
        const int64_t ab = (int64_t)a * (int64_t)multiplier;
        const int64_t nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
        high = (int32_t)((ab + nudge) / ((int64_t)1 << 31));
    }
    const int32_t mask = (int32_t)(((int64_t)1 << right) - 1);
    const int32_t remainder = high & mask, threshold = (mask >> 1) + (high < 0 ? 1 : 0);
    return (high >> right) + (remainder > threshold ? 1 : 0);
}
"""
REQUANTIZE_CHECK_C = r"""
#include <stdio.h>
#include "iotnas_int8.h"
@REFERENCE@
static uint64_t state = 0x9e3779b97f4a7c15u;
static uint32_t next(void) { /* xorshift64* */
    state ^= state >> 12, state ^= state << 25, state ^= state >> 27;
    return (uint32_t)((state * 0x2545f4914f6cdd1du) >> 32);
}
static long checked, differ;
static void check(int32_t x, int32_t m, int32_t shift) {
    ++checked;
    if (iotnas_requantize(x, m, shift) != gemmlowp_requantize(x, m, shift)) {
        if (differ++ < 5) printf("x=%ld m=%ld shift=%ld\n", (long)x, (long)m, (long)shift);
    }
}
int main(void) {
    static const int32_t edges[] = {0, 1, -1, 2, -2, 3, -3, 127, -128, 255, -256, 1 << 15, -(1 << 15), 1 << 30,
                                    -(1 << 30), INT32_MAX, INT32_MIN, INT32_MAX - 1, INT32_MIN + 1};
    const int n_edges = (int)(sizeof edges / sizeof edges[0]);
    for (int32_t shift = -31; shift <= 30; ++shift) {
        for (int i = 0; i < n_edges; ++i) {
            check(edges[i], 0, shift), check(edges[i], 1 << 30, shift), check(edges[i], INT32_MAX, shift);
            for (int k = 0; k < 200; ++k) check(edges[i], (int32_t)((1u << 30) | (next() >> 2)), shift);
        }
        /* every x whose high product lands next to a rounding boundary of 2^right */
        for (int k = 0; k < 20000; ++k) {
            const int32_t m = (int32_t)((1u << 30) | (next() >> 2));
            const int32_t x = (int32_t)next() >> (next() % 32u); /* every magnitude */
            for (int32_t d = -2; d <= 2; ++d) check(x + d, m, shift);
        }
        /* multipliers of 2^30 (a half): the products straddle 2^31 exactly */
        for (int32_t x = -4096; x <= 4096; ++x) check(x, 1 << 30, shift);
    }
    for (long k = 0; k < 4000000; ++k) /* and anything: any int32 x and multiplier but INT32_MIN */
        check((int32_t)next(), (int32_t)(next() | 1u), (int32_t)(next() % 62u) - 31);
    printf("%ld %ld\n", checked, differ);
    return 0;
}
"""


def test_requantization_equals_the_gemmlowp_reference(tmp_path):
    """The library's requantisation against gemmlowp's form on about 11 million inputs: every
    shift, x at the edges of int32 and of each rounding step, random x, multipliers of the Q31
    range (and any but INT32_MIN)."""
    require("gcc")
    from iotnas.export.c._emit import runtime_source

    for header in ("iotnas_int8.h", "iotnas_avx2.h"):
        (tmp_path / header).write_text(runtime_source(header))
    (tmp_path / "check.c").write_text(REQUANTIZE_CHECK_C.replace("@REFERENCE@", GEMMLOWP_REQUANTIZE_C))
    program = tmp_path / "check"
    subprocess.run(["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", f"-I{tmp_path}", "-o", str(program),
                    str(tmp_path / "check.c")], check=True)
    out = subprocess.run([str(program)], check=True, capture_output=True, text=True).stdout.split()
    checked, differ = int(out[-2]), int(out[-1])
    assert checked > 10_000_000
    assert differ == 0, " ".join(out[:-2])
