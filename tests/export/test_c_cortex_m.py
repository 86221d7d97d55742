"""The generated C library cross-compiled for Cortex-M4F and Cortex-M7 and run on QEMU's MPS2
boards (images and logits through semihosting): the same logits as on the host; and its flash
and RAM read from the ELF."""

from __future__ import annotations

import numpy as np
import pytest

from iotnas.export import deploy
from iotnas.export.c import (
    C_TOLERANCE,
    TARGETS,
    build_host,
    build_target,
    device_budget,
    plan_arena,
    run_host,
    run_qemu,
    trace,
)
from iotnas.export.c._emit import scratch_values
from iotnas.export.c._plan import FLOAT_BYTES

from .c_support import (
    FAMILY_MODELS,
    calibrated_model,
    generate,
    hwc,
    ort_logits,
    require,
)

KIB = 1024
N_IMAGES = 6  # emulation is slow; the host comparisons use 128 images
KEY = FAMILY_MODELS["resnet"]
CASES = [("cortex-m4", "int8"), ("cortex-m4", "e4m3"), ("cortex-m4", "e2m1fn"), ("cortex-m4", "float16"),
         ("cortex-m7", "float32"), ("cortex-m7", "int8")]


@pytest.fixture(scope="module")
def model(cifar_small):
    return calibrated_model(KEY, cifar_small)


@pytest.mark.parametrize(("target", "fmt"), CASES)
def test_qemu_logits_equal_the_host_build(target, fmt, model, cifar_small, tmp_path):
    require("gcc", "arm-none-eabi-gcc", "qemu-system-arm")
    c_dir, _ = generate(model, KEY, fmt, cifar_small, tmp_path / "export")
    pixels = cifar_small.test_images[:N_IMAGES]
    elf = build_target(c_dir, tmp_path / f"{target}.elf", TARGETS[target])
    on_board = run_qemu(elf, TARGETS[target], hwc(pixels), num_classes=10)
    host = run_host(build_host(c_dir, tmp_path / "host"), hwc(pixels), num_classes=10)
    reference = ort_logits(model, fmt, cifar_small, pixels)
    scale = max(1.0, float(np.abs(reference).max()))
    # The same program: only fused multiply-adds (the Arm compiler contracts a*b+c) may differ.
    assert np.abs(on_board - host).max() <= 1e-5 * scale
    assert np.abs(on_board - reference).max() <= C_TOLERANCE * scale
    assert (on_board.argmax(1) == host.argmax(1)).all()


@pytest.mark.parametrize("fmt", ["int8", "e2m1fn", "float32"])
def test_device_budget_read_from_the_elf(fmt, model, cifar_small, tmp_path):
    require("arm-none-eabi-gcc", "arm-none-eabi-size")
    c_dir, header = generate(model, KEY, fmt, cifar_small, tmp_path / "export")
    budget = device_budget(c_dir, TARGETS["cortex-m4"])
    promised = header["codes_bytes"] + header["scales_bytes"]
    # The packed weights sit in rodata as they are; code and layer tables stay within 16 KiB.
    assert budget.rodata_bytes >= promised
    assert promised < budget.flash_bytes <= promised + 16 * KIB
    graph = trace(deploy(model, fmt).module, in_channels=3, height=32, width=32)
    arena = plan_arena(graph).arena_bytes
    scratch = scratch_values(graph) * FLOAT_BYTES
    assert budget.bss_bytes >= arena + scratch
    assert budget.bss_bytes <= arena + scratch + 64  # alignment and newlib's few words at most
    assert 0 < budget.stack_bytes <= 2 * KIB
    assert budget.ram_bytes == budget.data_bytes + budget.bss_bytes + budget.stack_bytes
