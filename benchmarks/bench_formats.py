"""Rounding cost of iotnas.formats on 16M-element float32 tensors, against baselines.

    python benchmarks/bench_formats.py            # the table (a few minutes)
    python benchmarks/bench_formats.py --sweep    # plus all 2^32 float32 inputs for half and bfloat16

Columns: ns per element as "best / median" of the repeats (best: the run least disturbed by other
processes on a shared machine); GB/s of float32 input (at the best time) beside ours.
  ours, fresh        FloatFormat.round(x): fused torch.compile kernel, new output tensor
  ours, out=         the same kernel writing into a preallocated tensor (how emulation uses it)
  ours, eager        the eager fallback (same bits, one pass per operation)
  ml_dtypes astype   x.numpy().astype(dtype).astype(float32) (numpy float16 for half)
  torch cast         x.to(half/bfloat16).float(); for int8: quantize_per_channel + dequantize
                     (same scales; it multiplies by 1/scale, so its codes may differ at near-ties)
  copy_ (floor)      out.copy_(x): memory bandwidth, nothing computed
Every "ours" result is checked bit for bit against the eager kernel and, where it exists, the
ml_dtypes/numpy result; the "exact" column counts mismatches (must be 0).
"""

from __future__ import annotations

import argparse
import warnings
import os
import platform
import statistics
import time
from collections.abc import Callable

import ml_dtypes
import numpy as np
import torch

from iotnas.formats import FloatFormat, IntFormat, parse_format

N = 1 << 24
FORMATS = ["float16", "bfloat16", "e4m3", "e3m4", "e2m5", "int8"]
ORACLES = {
    "float16": np.float16,
    "bfloat16": ml_dtypes.bfloat16,
    "e4m3": ml_dtypes.float8_e4m3,
    "e3m4": ml_dtypes.float8_e3m4,
}
TORCH_CASTS = {"float16": torch.float16, "bfloat16": torch.bfloat16}


class Timing(tuple):
    """(best, median) seconds per call; best is the run least disturbed by other processes."""

    def __str__(self) -> str:
        return f"{ns(self[0]):.2f} / {ns(self[1]):.2f}"

    def gbps(self) -> str:
        return f"{4 * N / self[0] / 1e9:.1f} GB/s"


def timed(fn: Callable[[], object], repeats: int) -> Timing:
    """Best and median seconds per call, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return Timing((min(times), statistics.median(times)))


def ns(seconds: float) -> float:
    return seconds / N * 1e9


def mismatches(a: torch.Tensor, b: torch.Tensor) -> int:
    same = (a.view(torch.int32) == b.view(torch.int32)) | (torch.isnan(a) & torch.isnan(b))
    return int((~same).sum())


def bench_format(name: str, x: torch.Tensor, out: torch.Tensor, repeats: int, threads: int) -> dict[str, str]:
    fmt = parse_format(name) if name != "e2m5" else FloatFormat(2, 5)
    row = {"format": fmt.name, "threads": str(threads)}
    if isinstance(fmt, IntFormat):
        w = x.view(4096, -1)  # a 4096-channel weight matrix
        t = timed(lambda: fmt.round(w), max(1, repeats // 2))
        row["ours, fresh"] = f"{t} ({t.gbps()})"
        row["ours, out="] = row["ours, eager"] = "-"
        scales = fmt.scales(w)
        zero = torch.zeros(4096, dtype=torch.int64)
        native = lambda: torch.quantize_per_channel(w, scales.double(), zero, 0, torch.qint8).dequantize()  # noqa: E731
        row["torch cast"] = str(timed(native, repeats))
        row["ml_dtypes astype"] = "-"
        # exactness against the definition evaluated by numpy (torch's quantizer multiplies by
        # 1/scale instead of dividing, so it differs at near-ties and is only a speed baseline)
        s = scales.numpy()[:, None]
        ref = np.clip(np.round(w.numpy() / np.where(s == 0, 1, s)), -127, 127).astype(np.float32) * s
        row["exact"] = str(mismatches(fmt.round(w), torch.from_numpy(ref)))
        return row
    fresh = timed(lambda: fmt.round(x, compiled=True), repeats)
    into = timed(lambda: fmt.round(x, out=out, compiled=True), repeats)
    row["ours, fresh"] = f"{fresh} ({fresh.gbps()})"
    row["ours, out="] = f"{into} ({into.gbps()})"
    eager_result = fmt.round(x, compiled=False)
    if threads == 1:
        row["ours, eager"] = str(timed(lambda: fmt.round(x, compiled=False), max(1, repeats // 3)))
    else:
        row["ours, eager"] = "-"
    bad = mismatches(out, eager_result)
    if name in ORACLES:
        xn = x.numpy()
        dtype = ORACLES[name]
        ref = lambda: xn.astype(dtype).astype(np.float32)  # noqa: E731
        row["ml_dtypes astype"] = str(timed(ref, max(1, repeats // 2)))
        bad += mismatches(out, torch.from_numpy(ref()))
    else:
        row["ml_dtypes astype"] = "-"
    if name in TORCH_CASTS:
        dt = TORCH_CASTS[name]
        row["torch cast"] = str(timed(lambda: x.to(dt).float(), repeats))
        bad += mismatches(out, x.to(dt).float())
    else:
        row["torch cast"] = "-"
    row["exact"] = str(bad)
    return row


def sweep(name: str, chunk: int = 1 << 24) -> tuple[int, float]:
    """Mismatches over all 2^32 float32 bit patterns against numpy/ml_dtypes; (count, seconds)."""
    fmt = parse_format(name)
    dtype = ORACLES[name]
    start = time.perf_counter()
    bad = 0
    base = torch.arange(chunk, dtype=torch.int64)
    out = torch.empty(chunk)
    for lo in range(0, 1 << 32, chunk):
        x = (base + lo).to(torch.int32).view(torch.float32)  # wraps to the negative patterns
        fmt.round(x, out=out, compiled=True)
        ref = torch.from_numpy(x.numpy().astype(dtype).astype(np.float32))
        bad += mismatches(out, ref)
    return bad, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--sweep", action="store_true", help="also check all 2^32 inputs (half, bfloat16)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # overflow in the oracles' casts; torch's qint8 deprecation

    all_threads = torch.get_num_threads()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(N, generator=gen) * torch.exp2(torch.randint(-20, 20, (N,), generator=gen).float())
    out = torch.empty_like(x)
    parse_format("e4m3").round(x[:4096], compiled=True)  # compile once, outside the timings

    print(f"torch {torch.__version__}, ml_dtypes {ml_dtypes.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, {N} elements, ns per element as best / median of {args.repeats}\n")
    rows = []
    for threads in sorted({1, all_threads}):
        torch.set_num_threads(threads)
        floor = timed(lambda: out.copy_(x), args.repeats)
        for name in FORMATS:
            row = bench_format(name, x, out, args.repeats, threads)
            row["copy_ (floor)"] = str(floor)
            rows.append(row)
    torch.set_num_threads(all_threads)
    columns = ["format", "threads", "ours, fresh", "ours, out=", "ours, eager", "ml_dtypes astype", "torch cast",
               "copy_ (floor)", "exact"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(row[c] for c in columns) + " |")

    if args.sweep:
        print("\n| format | float32 inputs | mismatches vs numpy/ml_dtypes | seconds |\n|---|---|---|---|")
        for name in ("float16", "bfloat16"):
            bad, seconds = sweep(name)
            print(f"| {name} | 2^32 (all) | {bad} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
