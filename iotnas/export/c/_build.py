"""Compile and run the generated library: the host build (checks, timing) and the Cortex-M
builds (the device budget read from the ELF, and a run on an emulated MPS2 board).

Tools are Debian's: ``gcc``, ``arm-none-eabi-gcc`` with newlib, ``qemu-system-arm``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iotnas.errors import ExportError
from iotnas.export.c._emit import runtime_source

#: Strict C99 for the library (the checks build with these; users may pick any optimisation).
C_FLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror")
QEMU_TIMEOUT_S = 300


@dataclass(frozen=True, slots=True)
class Target:
    """A Cortex-M core, its compiler flags and the QEMU board that emulates it."""

    name: str
    cpu: str
    fpu: str
    machine: str

    @property
    def flags(self) -> tuple[str, ...]:
        return (f"-mcpu={self.cpu}", f"-mfpu={self.fpu}", "-mfloat-abi=hard", "-mthumb")


TARGETS = {
    "cortex-m4": Target("cortex-m4", "cortex-m4", "fpv4-sp-d16", "mps2-an386"),
    "cortex-m7": Target("cortex-m7", "cortex-m7", "fpv5-d16", "mps2-an500"),
}


@dataclass(frozen=True, slots=True)
class DeviceBudget:
    """What the library needs on a Cortex-M, read from its ELF (``-O2``, unused code dropped)."""

    target: str
    text_bytes: int  # code, libgcc/newlib helpers included
    rodata_bytes: int  # packed weights, tables, layer parameters
    data_bytes: int  # initialised RAM (a copy also sits in flash)
    bss_bytes: int  # the arena and the scratch (decoded weights, a padded input plane)
    stack_bytes: int  # worst case of iotnas_run's call tree (gcc -fcallgraph-info=su)

    @property
    def flash_bytes(self) -> int:
        return self.text_bytes + self.rodata_bytes + self.data_bytes

    @property
    def ram_bytes(self) -> int:
        return self.data_bytes + self.bss_bytes + self.stack_bytes


def tool(name: str) -> str:
    """Path of a build tool.

    Raises:
        ExportError: the tool is not installed (names the Debian packages to install).
    """
    path = shutil.which(name)
    if path is None:
        package = {"gcc": "gcc", "arm-none-eabi-gcc": "gcc-arm-none-eabi libnewlib-arm-none-eabi",
                   "arm-none-eabi-size": "binutils-arm-none-eabi", "qemu-system-arm": "qemu-system-arm"}[name]
        raise ExportError(f"{name} is not installed; install it with: apt-get install {package}")
    return path


def _run(cmd: list[str], *, cwd: Path, what: str, timeout: float = 600) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(cmd, check=False, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ExportError(f"{what} took longer than {timeout:.0f} s") from None
    if done.returncode != 0:
        raise ExportError(f"{what} failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-2000:]}")
    return done


def _sources(src: Path) -> list[str]:
    """The library's C files: the model and its kernels (float or int8)."""
    return [str(p) for p in sorted(src.glob("*.c"))]


def _harness(work: Path) -> Path:
    path = work / "harness.c"
    path.write_text(runtime_source("harness.c"), encoding="utf-8")
    return path


def build_host(src: Path, out: Path, *, extra: tuple[str, ...] = ()) -> Path:
    """Compile the library in ``src`` with the check harness for this machine; returns the program."""
    work = out.parent
    cmd = [tool("gcc"), *C_FLAGS, *extra, f"-I{src}", "-o", str(out), *_sources(src), str(_harness(work))]
    _run(cmd, cwd=work, what="gcc")
    return out


def build_target(src: Path, out: Path, target: Target) -> Path:
    """Cross-compile the library with the semihosted check harness for an MPS2 board."""
    work = out.parent
    startup, script = work / "startup.c", work / "cortex_m.ld"
    startup.write_text(runtime_source("startup.c"), encoding="utf-8")
    script.write_text(runtime_source("cortex_m.ld"), encoding="utf-8")
    cmd = [tool("arm-none-eabi-gcc"), *target.flags, *C_FLAGS, f"-I{src}", "--specs=rdimon.specs",
           "-nostartfiles", "-T", str(script), "-o", str(out), str(startup), *_sources(src), str(_harness(work))]
    _run(cmd, cwd=work, what=f"arm-none-eabi-gcc for {target.name}")
    return out


def _images_file(images: np.ndarray, path: Path) -> None:
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ExportError("images must be a uint8 array of shape (n, height, width, channels)")
    np.ascontiguousarray(images).tofile(path)


def _logits(path: Path, n: int, num_classes: int) -> np.ndarray:
    out = np.fromfile(path, dtype="<f4")
    if out.size != n * num_classes:
        raise ExportError(f"the C program wrote {out.size} logits, expected {n} x {num_classes}")
    return out.reshape(n, num_classes)


def run_host(program: Path, images: np.ndarray, *, num_classes: int) -> np.ndarray:
    """Logits of the host program for ``images`` (n × H × W × C uint8)."""
    with tempfile.TemporaryDirectory(prefix="iotnas-c-") as tmp:
        work = Path(tmp)
        _images_file(images, work / "input.bin")
        _run([str(program), str(work / "input.bin"), str(work / "logits.bin")], cwd=work, what=str(program.name))
        return _logits(work / "logits.bin", len(images), num_classes)


def run_qemu(elf: Path, target: Target, images: np.ndarray, *, num_classes: int,
             timeout: float = QEMU_TIMEOUT_S) -> np.ndarray:
    """Logits of the Cortex-M build run on QEMU's MPS2 board, images and logits through semihosting."""
    with tempfile.TemporaryDirectory(prefix="iotnas-qemu-") as tmp:
        work = Path(tmp)
        _images_file(images, work / "input.bin")
        _run([tool("qemu-system-arm"), "-machine", target.machine, "-cpu", target.cpu, "-nographic",
              "-monitor", "none", "-serial", "none", "-semihosting-config", "enable=on,target=native",
              "-kernel", str(elf)], cwd=work, what=f"qemu-system-arm -machine {target.machine}", timeout=timeout)
        return _logits(work / "logits.bin", len(images), num_classes)


def device_budget(src: Path, target: Target) -> DeviceBudget:
    """Flash and RAM of the library alone for ``target``: linked with ``iotnas_run`` as the entry
    and unused sections dropped, so the figures hold the library and the helpers it pulls in
    (newlib-nano's memcpy/memset, libgcc), nothing of a harness."""
    with tempfile.TemporaryDirectory(prefix="iotnas-budget-") as tmp:
        work = Path(tmp)
        gcc = tool("arm-none-eabi-gcc")
        _run([gcc, *target.flags, *C_FLAGS, "-ffunction-sections", "-fdata-sections", "-fcallgraph-info=su",
              f"-I{src}", "-c", *_sources(src)], cwd=work, what=f"arm-none-eabi-gcc for {target.name}")
        objects = [str(work / Path(s).with_suffix(".o").name) for s in _sources(src)]
        _run([gcc, *target.flags, "-nostartfiles", "-Wl,--entry=iotnas_run", "-Wl,--gc-sections",
              "--specs=nano.specs", "--specs=nosys.specs", "-o", "lib.elf", *objects],
             cwd=work, what=f"arm-none-eabi-gcc (link) for {target.name}")
        sections = _sections(_run([tool("arm-none-eabi-size"), "-A", "lib.elf"], cwd=work,
                                  what="arm-none-eabi-size").stdout)
        stack = worst_stack(sorted(work.glob("*.ci")), root="iotnas_run")

    def total(*prefixes: str) -> int:
        return sum(v for k, v in sections.items() if k.startswith(prefixes))

    return DeviceBudget(
        target=target.name, text_bytes=total(".text", ".ARM.exidx", ".init", ".fini"), rodata_bytes=total(".rodata"),
        data_bytes=total(".data", ".persistent"), bss_bytes=total(".bss", ".noinit"), stack_bytes=stack,
    )


def _sections(size_output: str) -> dict[str, int]:
    out = {}
    for line in size_output.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out


_NODE = re.compile(r'node: \{ title: "([^"]+)" label: "[^"]*?\\n[^"]*?(?:\\n(\d+) bytes \((\w+)\))?"')
_EDGE = re.compile(r'edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"')


def worst_stack(callgraphs: list[Path], *, root: str) -> int:
    """The deepest stack from ``root`` over gcc's ``-fcallgraph-info=su`` files: the largest sum
    of frame sizes along a call path. Library leaves without a graph (newlib's memcpy, memset)
    count 0; a dynamic frame or recursion is refused, since no bound would then hold.

    Raises:
        ExportError: a frame of dynamic size, or a recursive call.
    """
    frames: dict[str, int] = {}
    calls: dict[str, set[str]] = {}
    for path in callgraphs:
        text = path.read_text(encoding="utf-8")
        for name, size, kind in _NODE.findall(text):
            if size:
                if kind not in ("static", "bounded"):
                    raise ExportError(f"{name} has a {kind} stack frame; no worst case can be stated")
                frames[name] = max(frames.get(name, 0), int(size))
        for src, dst in _EDGE.findall(text):
            calls.setdefault(src, set()).add(dst)

    def depth(fn: str, path: tuple[str, ...]) -> int:
        if fn in path:
            raise ExportError(f"recursive call through {fn}; no worst-case stack can be stated")
        return frames.get(fn, 0) + max((depth(g, (*path, fn)) for g in calls.get(fn, ())), default=0)

    return depth(root, ())
