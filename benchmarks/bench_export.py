"""Bytes and ONNX Runtime cost of model.onnx with its weights stored in a format, against the float32 file.

    python benchmarks/bench_export.py                       # the table (about a minute)
    python benchmarks/bench_export.py --formats e4m3 int8 --repeats 200

For three models of different families and sizes (trained weights are not needed: bytes and
timings do not depend on the values), per format: the promised bytes (the search's count),
the deployed bytes (BatchNorm folded, then rounded), the file's bytes and its overhead, the
session-load time and the batch-1 latency (median over the repeats, one thread) of the format
file against the float32 file of the same folded network, measured in the same run; and the bytes
of the model's full-integer int8 TFLite file (``model_int8.tflite``, one per model whatever the
format; its activations calibrated on random images, which changes no byte count).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import onnxruntime as ort
import torch

from iotnas.arch import Arch
from iotnas.export import deploy
from iotnas.export._onnx import format_onnx
from iotnas.export._tflite import int8_tflite
from iotnas.spaces import build

MODELS = ["probenet/s2/3", "densenet/s3/3", "mobilenetv2/s4/0"]
FORMATS = ["e4m3", "e2m1fn", "float16", "e5m6", "int8"]


def _session(data: bytes) -> tuple[ort.InferenceSession, float]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    start = time.perf_counter()
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return session, (time.perf_counter() - start) * 1e3


def _latency_ms(session: ort.InferenceSession, x: np.ndarray, repeats: int) -> float:
    for _ in range(10):  # warm-up
        session.run(None, {"input": x})
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {"input": x})
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--formats", nargs="+", default=FORMATS)
    parser.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    print(f"<!-- {platform.node()}, {platform.processor() or platform.machine()}, onnxruntime {ort.__version__}, "
          f"load average {os.getloadavg()[0]:.1f}, {args.repeats} repeats, 1 thread -->")
    print("| model | format | promised B | deployed B | ONNX B | overhead B | float32 ONNX B | load ms (f32 → fmt) "
          "| latency ms (f32 → fmt) | latency ratio | int8 TFLite B |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key in args.models:
        model = build(Arch.parse(key), num_classes=10, in_channels=3).eval()
        base = format_onnx(deploy(model, "float32"), input_shape=(1, 3, 32, 32))
        base_session, base_load = _session(base.data)
        base_ms = _latency_ms(base_session, x, args.repeats)
        calibration = torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        tflite_bytes = len(int8_tflite(deploy(model, "int8"), calibration).data)
        for fmt in args.formats:
            deployed = deploy(model, fmt)
            f = format_onnx(deployed, input_shape=(1, 3, 32, 32))
            session, load = _session(f.data)
            ms = _latency_ms(session, x, args.repeats)
            print(f"| {key} | {fmt} | {deployed.promised_bytes:,} | {deployed.weight_bytes:,} | {len(f.data):,} | "
                  f"{f.overhead_bytes:,} | {len(base.data):,} | {base_load:.1f} → {load:.1f} | "
                  f"{base_ms:.3f} → {ms:.3f} | {ms / base_ms:.2f} | {tflite_bytes:,} |")


if __name__ == "__main__":
    main()
