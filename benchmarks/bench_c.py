"""The generated C library against ONNX Runtime, one model per family at 32 KiB of weights.

    python benchmarks/bench_c.py                    # int8 and e4m3, every family (about 5 minutes)
    python benchmarks/bench_c.py --formats float32  # other formats
    python benchmarks/bench_c.py --cflags=-O2 --cflags='-O2 -march=native'  # two host builds side by side
    python benchmarks/bench_c.py --families pnasnet --profile  # and where the C time goes, by operator
    python benchmarks/bench_c.py --layers           # single float convolutions of the families' kinds
    python benchmarks/bench_c.py --runtime-of main  # and the same models with main's kernels, before/after

For each model (the smallest-MAC model of its family whose weights take at most 32 KiB in
8 bits, found with `iotnas.cost`) and format, the table gives the promised weight bytes,
the Cortex-M4 flash and RAM of the library read from its ELF (arm-none-eabi-gcc -O2), and
the batch-1 latency on this machine of the host build (gcc -O2; ``--cflags`` once per build to
compare, e.g. ``-O2 -march=native`` for this machine's vector units, as a user building for their
own CPU would) against ONNX Runtime (one intra-op thread, all graph optimisations; it picks
AVX2/FMA kernels at run time) running the same deployed network (in int8: the C library computes
in integers, from the int8 TFLite model calibrated on random images; ONNX Runtime runs the
int8-valued network in float), with the ratio C / ONNX Runtime from the same run. Latencies are
medians of per-call thread CPU time (immune to being descheduled on a shared machine) and, beside
them, of wall time; each side warms up for >= 10 runs and 0.25 s, then times >= 50 runs and >= 1 s.
Every build and ONNX Runtime are timed in turn ``--rounds`` times and each keeps its smallest
median: a round slowed by another tenant of a shared machine does not set the figure.

``--layers`` times single float32 convolutions instead (the depthwise, grouped, dense and
pointwise kinds the models spend their time in), the C library's ``iotnas_run`` (input
normalisation and the layer) against ONNX Runtime running the layer, with MACs per ns of the C build.

``--runtime-of REF`` adds, per model, the first build with the runtime kernels (``iotnas_ops*``,
``iotnas_int8*``, ``iotnas_avx2.h``) of git revision REF around the same generated model, timed in
the same rounds: a before/after of kernel changes in one run.

``--profile`` adds, per model, the C time by operator kind from an instrumented copy of the
host build: every call of ``iotnas_run`` timed on its own (monotonic clock) over 200 runs, the
median per call summed by kind, beside the uninstrumented median.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
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
    Graph,
    Op,
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
    "compact": "compact/s5/3", "densenet": "densenet/s3/21", "googlenet": "googlenet/s6/35",
    "mobilenetv2": "mobilenetv2/s6/28",
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


def timer_program(c_dir: Path, work: Path, *, flags: tuple[str, ...] = ("-O2",)) -> Path:
    """The host build (gcc ``flags``, -O2 by default) with the timer as main."""
    (work / "timer.c").write_text(TIMER_C, encoding="utf-8")
    program = work / "timer"
    sources = [str(p) for p in sorted(c_dir.glob("*.c"))]
    subprocess.run(["gcc", "-std=c99", *flags, f"-I{c_dir}", "-o", str(program), *sources, str(work / "timer.c")],
                   check=True)
    return program


def with_runtime_of(ref: str, c_dir: Path, out: Path) -> Path:
    """A copy of the library at ``c_dir`` whose runtime kernel files are git revision ``ref``'s."""
    out.mkdir()
    for path in sorted(c_dir.iterdir()):
        data: bytes | None = path.read_bytes()
        if path.name.startswith(("iotnas_ops", "iotnas_int8", "iotnas_avx2")):  # a kernel file: REF's, or none
            shown = subprocess.run(["git", "show", f"{ref}:iotnas/export/c/runtime/{path.name}"], check=False,
                                   capture_output=True, cwd=Path(__file__).resolve().parent)
            data = shown.stdout if shown.returncode == 0 else None
        if data is not None:
            (out / path.name).write_bytes(data)
    return out


def time_program(program: Path) -> tuple[float, float]:
    """(wall, CPU) median ms per call of a timer program."""
    lines = subprocess.run([str(program)], check=True, capture_output=True, text=True).stdout.split()
    wall, cpu = [float(v) for v in lines[0::2]], [float(v) for v in lines[1::2]]
    return statistics.median(wall) / 1e6, statistics.median(cpu) / 1e6


#: Times each statement of iotnas_run separately (the generated file, rewritten by
#: ``profiled_model``) over PROFILE_RUNS runs; prints one line of ns per statement per run.
PROFILE_RUNS = 200
PROFILE_C = r"""
#include <stdio.h>
#define PROFILE_RUNS @RUNS@
#include "iotnas_model.h"

extern double iotnas_profile_ns[];
extern const unsigned iotnas_profile_n;
static uint8_t image[IOTNAS_INPUT_CHANNELS * IOTNAS_INPUT_HEIGHT * IOTNAS_INPUT_WIDTH];
static float logits[IOTNAS_NUM_CLASSES];

int main(void) {
    for (unsigned i = 0; i < sizeof image; ++i) image[i] = (uint8_t)(i * 37u);
    for (int n = 0; n < 20; ++n) iotnas_run(image, logits);
    for (int n = 0; n < PROFILE_RUNS; ++n) {
        iotnas_run(image, logits);
        for (unsigned i = 0; i < iotnas_profile_n; ++i) printf("%.0f ", iotnas_profile_ns[i]);
        printf("\n");
    }
    return logits[0] != logits[0];
}
""".replace("@RUNS@", str(PROFILE_RUNS))
_CALL = re.compile(r"^    (iotnas_\w+)\((&(op_\w+))?.*;$")


def profiled_model(model_c: str) -> tuple[str, list[tuple[str, str | None]]]:
    """``iotnas_model.c`` with every statement of ``iotnas_run`` timed into ``iotnas_profile_ns``;
    and per statement, (kernel function, operator identifier or None)."""
    head, body = model_c.split("int iotnas_run(", 1)
    lines, calls = [], []
    for line in body.splitlines():
        m = _CALL.match(line)
        if m:
            lines.append(f"    {{ const double t0 = now_ns(); {line.strip()} "
                         f"iotnas_profile_ns[{len(calls)}] = now_ns() - t0; }}")
            calls.append((m.group(1), m.group(3)))
        else:
            lines.append(line)
    clock = ("#define _POSIX_C_SOURCE 199309L\n#include <time.h>\n"
             "static double now_ns(void) {\n    struct timespec t;\n    clock_gettime(CLOCK_MONOTONIC, &t);\n"
             "    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;\n}\n")
    table = f"double iotnas_profile_ns[{len(calls)}];\nconst unsigned iotnas_profile_n = {len(calls)}u;\n"
    return clock + head + table + "int iotnas_run(" + "\n".join(lines) + "\n", calls


def _describe(op: Op | None, graph: Graph, fn: str) -> str:
    """An operator kind with what decides its kernel: kernel size, stride, channels per group."""
    if op is None or op.kind not in ("conv", "depthwise"):
        return fn.removeprefix("iotnas_")
    p = op.params
    if "groups" in p:  # float library: (C, H, W), groups
        cin, groups = graph.shapes[op.inputs[0]][0], p["groups"]
        cout = op.shape[0]
    else:  # int8 library: one call per group (cin of in_stride channels), or a depthwise call
        cin, cout = p["in_stride"], p["cout"] * (p["in_stride"] // p["cin"])
        groups = cin if op.kind == "depthwise" else p["in_stride"] // p["cin"]
    what = "depthwise" if groups == cin else ("grouped" if groups > 1 else "conv")
    return f"{what} {p['kh']}x{p['kw']} s{p['sh']} ({cin}->{cout}, {cin // groups}/group)"


def profile_c(c_dir: Path, work: Path, graph: Graph, *, flags: tuple[str, ...]) -> list[tuple[str, int, float]]:
    """(operator kind, calls, median ms per inference summed over its calls), slowest first."""
    source, calls = profiled_model((c_dir / "iotnas_model.c").read_text(encoding="utf-8"))
    prof = work / "profiled"
    prof.mkdir()
    for path in c_dir.iterdir():
        (prof / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    (prof / "iotnas_model.c").write_text(source, encoding="utf-8")
    (work / "profile.c").write_text(PROFILE_C, encoding="utf-8")
    program = work / "profile"
    subprocess.run(["gcc", "-std=c99", *flags, f"-I{prof}", "-o", str(program),
                    *(str(p) for p in sorted(prof.glob("*.c"))), str(work / "profile.c")], check=True)
    rows = [[float(v) for v in line.split()] for line in
            subprocess.run([str(program)], check=True, capture_output=True, text=True).stdout.splitlines()]
    ops = {"op_" + re.sub(r"\W", "_", op.name): op for op in graph.ops}
    by_kind: dict[str, tuple[int, float]] = {}
    for i, (fn, ident) in enumerate(calls):
        kind = _describe(ops.get(ident or ""), graph, fn)
        n, ms = by_kind.get(kind, (0, 0.0))
        by_kind[kind] = (n + 1, ms + statistics.median(r[i] for r in rows) / 1e6)
    return sorted(((k, n, ms) for k, (n, ms) in by_kind.items()), key=lambda r: -r[2])


#: (input channels, output channels, input size, kernel, stride, groups) of --layers: PNASNet's
#: depthwise 7 x 7, stems, ResNeXt's grouped and pointwise layers, a dense 3 x 3, a small depthwise.
LAYERS = [(8, 8, 32, 7, 1, 8), (8, 8, 16, 7, 2, 8), (3, 8, 32, 3, 1, 1), (5, 5, 32, 3, 1, 1), (10, 10, 32, 3, 2, 2),
          (16, 16, 16, 3, 1, 1), (32, 32, 8, 3, 1, 32), (16, 16, 16, 5, 2, 16), (3, 64, 32, 1, 1, 1),
          (64, 10, 32, 1, 1, 1), (10, 20, 32, 1, 2, 1)]


def time_layers(builds: list[tuple[str, ...]], rounds: int) -> None:
    """Print the --layers table: per layer, each build's and ONNX Runtime's median CPU ms."""
    named = [" ".join(flags) for flags in builds]
    print("| layer | MACs | " + " | ".join(f"C µs `{n}`" for n in named) + " | ORT µs | "
          + " | ".join(f"C / ORT `{n}`" for n in named) + " | " + " | ".join(f"MAC/ns `{n}`" for n in named) + " |")
    print("|---|---:|" + "---:|" * (3 * len(builds) + 1))
    for cin, cout, size, k, stride, groups in LAYERS:
        torch.manual_seed(0)
        conv = torch.nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups)
        model = torch.nn.Sequential(conv, torch.nn.Flatten()).eval()
        out = (size + 2 * (k // 2) - k) // stride + 1
        macs = cout * out * out * k * k * cin // groups
        meta = {"model_key": "layer", "num_classes": cout * out * out, "in_channels": cin,
                "input": {"height": size, "width": size, "mean": [0.0] * cin, "std": [1.0] * cin}}
        deployed = deploy(model, "float32")
        onnx_bytes = export_onnx(deployed.module, input_shape=(1, cin, size, size))
        c_cpu, ort_cpu = [math.inf] * len(builds), math.inf
        with tempfile.TemporaryDirectory(prefix="bench-c-") as tmp:
            work = Path(tmp)
            write_c_library(work / "c", deployed, meta)
            programs = []
            for i, flags in enumerate(builds):
                (work / f"build{i}").mkdir()
                programs.append(timer_program(work / "c", work / f"build{i}", flags=flags))
            for _ in range(rounds):
                for i, program in enumerate(programs):
                    c_cpu[i] = min(c_cpu[i], time_program(program)[1])
                ort_m = time_onnx(onnx_bytes, settings=OrtSettings(threads=1), protocol=Protocol())
                ort_cpu = min(ort_cpu, ort_m.cpu_median_ms)
        kind = "depthwise" if groups == cin else ("grouped" if groups > 1 else "conv")
        print(f"| {kind} {k}x{k} s{stride}, {cin}->{cout}, {size}x{size} | {macs:,} | "
              + " | ".join(f"{ms * 1e3:.1f}" for ms in c_cpu) + f" | {ort_cpu * 1e3:.1f} | "
              + " | ".join(f"{ms / ort_cpu:.2f}" for ms in c_cpu) + " | "
              + " | ".join(f"{macs / (ms * 1e6):.1f}" for ms in c_cpu) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formats", default="int8,e4m3", help="comma-separated format names")
    parser.add_argument("--families", default=",".join(MODELS), help="comma-separated families")
    parser.add_argument("--cflags", action="append", help="host compiler flags of a timed build; repeat for "
                        "several builds in one table (default -O2; e.g. '-O2 -march=native' for this machine's "
                        "vector units)")
    parser.add_argument("--rounds", type=int, default=3, help="times each build and ONNX Runtime are timed in "
                        "turn; the smallest median is kept")
    parser.add_argument("--profile", action="store_true", help="also print the C time by operator kind")
    parser.add_argument("--layers", action="store_true", help="time single float convolutions instead of models")
    parser.add_argument("--runtime-of", metavar="REF", help="also time the first build with git revision REF's "
                        "runtime kernels (same generated model), as a before/after")
    args = parser.parse_args()
    builds = [tuple(flags.split()) for flags in (args.cflags or ["-O2"])]
    profiles = []
    for flags in builds:
        print(f"host build: gcc -std=c99 {' '.join(flags)}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}; onnxruntime {ort.__version__}; "
          f"torch {torch.__version__}; {args.rounds} rounds, the smallest median of each side kept")
    print()
    if args.layers:
        time_layers(builds, args.rounds)
        print(f"\nload average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
        return
    named = [" ".join(flags) for flags in builds]
    print("| family | model | format | promised bytes | deployed bytes | M4 flash | flash − deployed | M4 RAM "
          "(arena + stack) | " + " | ".join(f"C ms `{n}` (CPU / wall)" for n in named)
          + " | ORT ms (CPU / wall) | " + " | ".join(f"C / ORT `{n}` (CPU)" for n in named)
          + (f" | C ms `{args.runtime_of}` kernels `{named[0]}` (CPU) | C / `{args.runtime_of}` (CPU)"
             if args.runtime_of else "") + " |")
    print("|---|---|---|---:|---:|---:|---:|---:|" + "---:|" * (2 * len(builds) + 1 + 2 * bool(args.runtime_of)))
    target = TARGETS["cortex-m4"]
    for family in args.families.split(","):
        key = MODELS[family]
        torch.manual_seed(0)
        model = build(Arch.parse(key)).eval()
        calibration = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # untrained: any range
        for fmt in args.formats.split(","):
            deployed = deploy(model, fmt)
            meta = {"model_key": key, **META}
            onnx_bytes = export_onnx(deployed.module, input_shape=(1, 3, 32, 32))
            c_times: list[tuple[float, float]] = [(math.inf, math.inf)] * len(builds)
            ort_cpu = ort_wall = ref_cpu = math.inf
            with tempfile.TemporaryDirectory(prefix="bench-c-") as tmp:
                work = Path(tmp)
                if fmt == "int8":  # integer arithmetic, from the int8 TFLite model (as the export does)
                    graph, plan = write_int8_c_library(work / "c", int8_tflite(deployed, calibration), meta)
                else:
                    graph, plan = write_c_library(work / "c", deployed, meta)
                header, _ = deployed_stream(deployed, meta)
                build_host(work / "c", work / "check")  # the strict build must pass too
                budget = device_budget(work / "c", target)
                programs = []
                for i, flags in enumerate(builds):
                    (work / f"build{i}").mkdir()
                    programs.append(timer_program(work / "c", work / f"build{i}", flags=flags))
                if args.runtime_of:
                    (work / "ref").mkdir()
                    ref_program = timer_program(with_runtime_of(args.runtime_of, work / "c", work / "c-ref"),
                                                work / "ref", flags=builds[0])
                for _ in range(args.rounds):
                    for i, program in enumerate(programs):
                        wall, cpu = time_program(program)
                        c_times[i] = (min(c_times[i][0], wall), min(c_times[i][1], cpu))
                    if args.runtime_of:
                        ref_cpu = min(ref_cpu, time_program(ref_program)[1])
                    ort_m = time_onnx(onnx_bytes, settings=OrtSettings(threads=1), protocol=Protocol())
                    ort_cpu, ort_wall = min(ort_cpu, ort_m.cpu_median_ms), min(ort_wall, ort_m.median_ms)
                if args.profile:
                    profiles.append((key, fmt, c_times[0][0], profile_c(work / "c", work, graph, flags=builds[0])))
            deployed_bytes = header["codes_bytes"] + header["scales_bytes"]
            print(f"| {family} | `{key}` | {fmt} | {deployed.promised_bytes:,} | {deployed_bytes:,} | "
                  f"{budget.flash_bytes:,} | {budget.flash_bytes - deployed_bytes:,} | {budget.ram_bytes:,} "
                  f"({plan.arena_bytes:,} + {budget.stack_bytes:,}) | "
                  + " | ".join(f"{cpu:.3f} / {wall:.3f}" for wall, cpu in c_times)
                  + f" | {ort_cpu:.3f} / {ort_wall:.3f} | "
                  + " | ".join(f"{cpu / ort_cpu:.2f}" for _, cpu in c_times)
                  + (f" | {ref_cpu:.3f} | {c_times[0][1] / ref_cpu:.2f}" if args.runtime_of else "") + " |", flush=True)
    for key, fmt, c_wall, rows in profiles:
        print(f"\n`{key}` {fmt}: C time by operator (instrumented build, median per call; "
              f"{sum(ms for _, _, ms in rows):.3f} ms in all, {c_wall:.3f} ms uninstrumented wall)\n")
        print("| operator | calls | ms | share |\n|---|---:|---:|---:|")
        total = sum(ms for _, _, ms in rows)
        for kind, n, ms in rows:
            print(f"| {kind} | {n} | {ms:.4f} | {ms / total:.0%} |")
    print()
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
