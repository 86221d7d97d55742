"""The generated C library against ONNX Runtime, one model per family at 32 KiB of weights.

    python benchmarks/bench_c.py                    # int8 and e4m3, every family (about 2 minutes)
    python benchmarks/bench_c.py --formats float32  # other formats

For each model (the smallest-MAC model of its family whose weights take at most 32 KiB in
8 bits, found with `iotnas.cost`) and format, the table gives the promised weight bytes,
the Cortex-M4 flash and RAM of the library read from its ELF (arm-none-eabi-gcc -O2), and
the batch-1 latency on this machine of the host build (gcc -O2) against ONNX Runtime (one
intra-op thread, all graph optimisations) running the same deployed network (in int8: the C
library computes in integers, from the int8 TFLite model calibrated on random images; ONNX
Runtime runs the int8-valued network in float), with the
ratio C / ONNX Runtime from the same run. Latencies are medians of per-call thread CPU time
(immune to being descheduled on a shared machine) and, beside them, of wall time; each side
warms up for >= 10 runs and 0.25 s, then times >= 50 runs and >= 1 s.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import tempfile
from pathlib import Path

import onnxruntime as ort
import torch

from iotnas.arch import Arch
from iotnas.export import deploy
from iotnas.export._tflite import int8_tflite
from iotnas.export.c import (
    TARGETS,
    build_host,
    device_budget,
    write_c_library,
    write_int8_c_library,
)
from iotnas.export.c._emit import deployed_stream
from iotnas.latency.measure import Protocol
from iotnas.latency.runtimes import OrtSettings, export_onnx, time_onnx
from iotnas.spaces import build

KIB = 1024
#: The smallest-MAC model of each family with at most 32 Ki values (32 KiB in 8 bits).
MODELS = {
    "densenet": "densenet/s3/21", "googlenet": "googlenet/s6/35", "mobilenetv2": "mobilenetv2/s6/28",
    "pnasnet": "pnasnet/s3/13", "probenet": "probenet/s2/39", "resnet": "resnet/s5/4", "resnext": "resnext/s3/10",
}
META = {"num_classes": 10, "in_channels": 3,
        "input": {"height": 32, "width": 32, "mean": [125.3, 123.0, 113.9], "std": [63.0, 62.1, 66.7]}}

#: Times iotnas_run like iotnas.latency's protocol: warm-up >= 10 runs and 0.25 s, then >= 50 runs
#: and >= 1 s; prints "wall_ns cpu_ns" per timed run.
TIMER_C = r"""
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <time.h>
#include "iotnas_model.h"

static uint8_t image[IOTNAS_INPUT_CHANNELS * IOTNAS_INPUT_HEIGHT * IOTNAS_INPUT_WIDTH];
static float logits[IOTNAS_NUM_CLASSES];

static double ns(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

int main(void) {
    for (unsigned i = 0; i < sizeof image; ++i) image[i] = (uint8_t)(i * 37u);
    double start = ns(CLOCK_MONOTONIC);
    for (int n = 0; n < 10 || ns(CLOCK_MONOTONIC) - start < 0.25e9; ++n) iotnas_run(image, logits);
    start = ns(CLOCK_MONOTONIC);
    for (int n = 0; n < 50 || ns(CLOCK_MONOTONIC) - start < 1e9; ++n) {
        double w0 = ns(CLOCK_MONOTONIC), c0 = ns(CLOCK_THREAD_CPUTIME_ID);
        iotnas_run(image, logits);
        double c1 = ns(CLOCK_THREAD_CPUTIME_ID), w1 = ns(CLOCK_MONOTONIC);
        printf("%.0f %.0f\n", w1 - w0, c1 - c0);
    }
    return logits[0] != logits[0]; /* uses the result */
}
"""


def time_c(c_dir: Path, work: Path, *, flags: tuple[str, ...] = ("-O2",)) -> tuple[float, float]:
    """(wall, CPU) median ms per call of the host build (gcc ``flags``, -O2 by default)."""
    (work / "timer.c").write_text(TIMER_C, encoding="utf-8")
    program = work / "timer"
    sources = [str(p) for p in sorted(c_dir.glob("*.c"))]
    subprocess.run(["gcc", "-std=c99", *flags, f"-I{c_dir}", "-o", str(program), *sources, str(work / "timer.c")],
                   check=True)
    lines = subprocess.run([str(program)], check=True, capture_output=True, text=True).stdout.split()
    wall, cpu = [float(v) for v in lines[0::2]], [float(v) for v in lines[1::2]]
    return statistics.median(wall) / 1e6, statistics.median(cpu) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formats", default="int8,e4m3", help="comma-separated format names")
    parser.add_argument("--families", default=",".join(MODELS), help="comma-separated families")
    parser.add_argument("--cflags", default="-O2", help="host compiler flags of the timed build (e.g. '-O3 "
                        "-march=native' for this machine's vector units)")
    args = parser.parse_args()
    print(f"host build: gcc -std=c99 {args.cflags}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}; onnxruntime {ort.__version__}; "
          f"torch {torch.__version__}")
    print()
    print("| family | model | format | promised bytes | deployed bytes | M4 flash | flash − deployed | M4 RAM "
          "(arena + stack) | C ms (CPU / wall) | ORT ms (CPU / wall) | C / ORT (CPU) |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    target = TARGETS["cortex-m4"]
    for family in args.families.split(","):
        key = MODELS[family]
        torch.manual_seed(0)
        model = build(Arch.parse(key)).eval()
        calibration = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # untrained: any range
        for fmt in args.formats.split(","):
            deployed = deploy(model, fmt)
            meta = {"model_key": key, **META}
            with tempfile.TemporaryDirectory(prefix="bench-c-") as tmp:
                work = Path(tmp)
                if fmt == "int8":  # integer arithmetic, from the int8 TFLite model (as the export does)
                    _, plan = write_int8_c_library(work / "c", int8_tflite(deployed, calibration), meta)
                else:
                    _, plan = write_c_library(work / "c", deployed, meta)
                header, _ = deployed_stream(deployed, meta)
                build_host(work / "c", work / "check")  # the strict build must pass too
                budget = device_budget(work / "c", target)
                c_wall, c_cpu = time_c(work / "c", work, flags=tuple(args.cflags.split()))
            onnx_bytes = export_onnx(deployed.module, input_shape=(1, 3, 32, 32))
            ort_m = time_onnx(onnx_bytes, settings=OrtSettings(threads=1), protocol=Protocol())
            deployed_bytes = header["codes_bytes"] + header["scales_bytes"]
            print(f"| {family} | `{key}` | {fmt} | {deployed.promised_bytes:,} | {deployed_bytes:,} | "
                  f"{budget.flash_bytes:,} | {budget.flash_bytes - deployed_bytes:,} | {budget.ram_bytes:,} "
                  f"({plan.arena_bytes:,} + {budget.stack_bytes:,}) | {c_cpu:.3f} / {c_wall:.3f} | "
                  f"{ort_m.cpu_median_ms:.3f} / {ort_m.median_ms:.3f} | {c_cpu / ort_m.cpu_median_ms:.2f} |",
                  flush=True)
    print()
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
