"""Time models in a fresh process, speaking JSON over stdin and stdout.

A runtime keeps state between models (thread pools, allocator arenas, torch's
one-shot inter-op setting), so each model is timed in a process of its own:
:func:`run_jobs` starts ``python -m iotnas.latency.worker``, writes one JSON
request and reads one JSON reply. Nothing is ever unpickled.

Request: ``{"protocol": {...}, "jobs": [job, ...]}`` where a job is either
``{"runtime": "onnxruntime", "onnx_b64": "...", "target": str?, "settings": {...}}``
or ``{"runtime": "torch", "arch": {...}, "threads": int, "interop_threads": int,
"num_classes": int, "in_channels": int, "input_size": int}``.
Reply: ``{"results": [{"measurement": {...}} | {"error": "...", "memory": bool?}, ...]}``.
With ``--memory-limit-mb N`` the process caps its own address space first, so a
small graph that allocates gigabytes fails there (reported with ``"memory": true``)
instead of making the device swap.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import subprocess
import sys
from typing import Any

from iotnas.errors import IotnasError, LatencyError
from iotnas.latency.measure import LatencyMeasurement, Protocol, brief, check_keys, check_threads
from iotnas.latency.runtimes import OrtSettings

#: Seconds allowed for a worker to start and load its runtime, on top of the protocol's caps.
STARTUP_ALLOWANCE_S = 60.0
#: Longest target name a job may carry.
MAX_TARGET_CHARS = 1000
ONNX_JOB_KEYS = frozenset({"runtime", "onnx_b64", "target", "settings"})
#: How allocation failures read: Python's, the C++ runtime's, ONNX Runtime's arena and the C library's.
_MEMORY_MARKERS = ("MemoryError", "bad_alloc", "Failed to allocate memory", "Cannot allocate memory")
_SIGKILL = 9  # what the kernel's out-of-memory killer sends


class MemoryLimitError(LatencyError):
    """A timing process ran out of the memory it may use."""


def decode_onnx(job: dict[str, Any]) -> bytes:
    """The ONNX bytes of a job, checked to be base64 text.

    Raises:
        LatencyError: ``onnx_b64`` is missing or not base64.
    """
    text = job.get("onnx_b64")
    if not isinstance(text, str) or not text:
        raise LatencyError("job needs 'onnx_b64': the ONNX graph as base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise LatencyError(f"'onnx_b64' is not valid base64: {exc}") from exc


def parse_onnx_job(job: Any) -> tuple[bytes, str | None, OrtSettings]:
    """The graph, target name and settings of an ONNX Runtime job, all checked.

    Threads are checked against the cores this process may use: the agent
    checks a request with this before timing it, and the worker it starts
    (same machine, same affinity) checks again.

    Raises:
        LatencyError: a key is unknown, missing, mistyped or out of bounds.
    """
    check_keys(job, ONNX_JOB_KEYS, what="job")
    if job.get("runtime", "onnxruntime") != "onnxruntime":
        raise LatencyError(f"job runtime must be onnxruntime here, got {brief(job.get('runtime'))}")
    target = job.get("target")
    if target is not None and not (isinstance(target, str) and 0 < len(target) <= MAX_TARGET_CHARS):
        raise LatencyError(f"'target' must be a string of 1 to {MAX_TARGET_CHARS} characters, got {brief(target)}")
    settings = OrtSettings.from_dict(job.get("settings", {})).check_cores()
    return decode_onnx(job), target, settings


def _run_job(job: Any, protocol: Protocol) -> LatencyMeasurement:
    from iotnas.latency import runtimes

    if isinstance(job, dict) and job.get("runtime") == "torch":
        from iotnas.arch import Arch
        from iotnas.spaces import build

        arch = Arch.from_dict(job.get("arch"))
        in_channels, size = int(job.get("in_channels", 3)), int(job.get("input_size", 32))
        model = build(arch, num_classes=int(job.get("num_classes", 10)), in_channels=in_channels)
        return runtimes.time_torch(
            model,
            input_shape=(1, in_channels, size, size),
            threads=check_threads(job.get("threads", 1)),
            interop_threads=check_threads(job.get("interop_threads", 1), field="interop_threads"),
            protocol=protocol,
            target=arch.key,
        )
    data, target, settings = parse_onnx_job(job)
    return runtimes.time_onnx(data, settings=settings, protocol=protocol, target=target)


def _memory_message(text: str) -> str | None:
    """The line of ``text`` from where it reports an allocation failure, or None if it reports none."""
    for marker in _MEMORY_MARKERS:
        at = text.find(marker)
        if at >= 0:
            return text[at:].splitlines()[0][:200]
    return None


def _failure(exc: BaseException) -> dict[str, Any]:
    """One job's result for the error it raised; allocation failures are marked, whoever reported them."""
    cause: BaseException | None = exc
    for _ in range(10):  # the error and what caused it (ONNX Runtime's, under a LatencyError)
        if cause is None:
            break
        memory = "MemoryError" if isinstance(cause, MemoryError) else _memory_message(str(cause))
        if memory is not None:
            return {"error": f"out of memory: {memory}", "memory": True}
        cause = cause.__cause__
    if isinstance(exc, IotnasError):
        return {"error": str(exc)}
    first = (str(exc).splitlines() or [""])[0]
    return {"error": f"the runtime failed while timing: {type(exc).__name__}: {first[:300]}"}


def handle(request: Any) -> dict[str, Any]:
    """Answer one request (in this process); errors per job are reported, not raised."""
    if not isinstance(request, dict) or not isinstance(request.get("jobs"), list):
        raise LatencyError("request must be a JSON object with a 'jobs' list")
    protocol = Protocol.from_dict(request.get("protocol", {}))
    results: list[dict[str, Any]] = []
    for job in request["jobs"]:
        try:
            results.append({"measurement": _run_job(job, protocol).to_dict()})
        except Exception as exc:  # process edge: whatever one job raises is that job's result
            results.append(_failure(exc))
    return {"results": results}


def limit_memory(megabytes: int) -> None:
    """Cap this process's address space (``RLIMIT_AS``) at ``megabytes`` MiB, or lower if the hard limit is.

    Raises:
        LatencyError: this system cannot limit a process's memory.
    """
    try:
        import resource

        limit = megabytes << 20
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, AttributeError, ValueError, OSError) as exc:
        raise LatencyError(f"cannot limit the timing process's memory on this system: {exc}") from exc


def run_jobs(
    jobs: list[dict[str, Any]],
    *,
    protocol: Protocol,
    timeout_s: float | None = None,
    memory_limit_mb: int | None = None,
) -> list[LatencyMeasurement | LatencyError]:
    """Time ``jobs`` one after another in one fresh worker process.

    Args:
        timeout_s: wall-clock limit for the whole process; by default the
            protocol's caps for every job plus a start-up allowance.
        memory_limit_mb: the process's address-space limit (MiB); None: no limit.

    Returns:
        One measurement, or the error that job raised, per job, in order; a
        job that ran out of memory yields a :class:`MemoryLimitError`.

    Raises:
        MemoryLimitError: the worker died of its memory limit.
        LatencyError: the worker could not start, crashed or ran out of time.
    """
    if timeout_s is None:
        per_job = protocol.sessions * (2 * protocol.max_s + protocol.warmup_s + 10.0)  # timed cap, warm-up, load
        timeout_s = STARTUP_ALLOWANCE_S + per_job * len(jobs)
    command = [sys.executable, "-m", "iotnas.latency.worker"]
    if memory_limit_mb is not None:
        command += ["--memory-limit-mb", str(memory_limit_mb)]
    limit_note = "" if memory_limit_mb is None else f" (the timing process may use {memory_limit_mb} MiB)"
    payload = json.dumps({"protocol": protocol.to_dict(), "jobs": jobs})
    try:
        done = subprocess.run(command, input=payload, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise LatencyError(f"timing did not finish within {timeout_s:.0f} s; lower the protocol's max_s") from exc
    except OSError as exc:
        raise LatencyError(f"cannot start a timing process: {exc}") from exc
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines()[-1:] or ["no message"])[0][:300]
        memory = _memory_message(done.stderr) or ("killed" if done.returncode == -_SIGKILL else None)
        if memory_limit_mb is not None and memory is not None:
            raise MemoryLimitError(f"the timing process ran out of memory ({memory}){limit_note}")
        raise LatencyError(f"timing process failed (exit {done.returncode}): {tail}")
    try:
        return [_result(r, limit_note) for r in json.loads(done.stdout)["results"]]
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise LatencyError(f"timing process answered malformed JSON: {exc}") from exc


def _result(reply: dict[str, Any], limit_note: str) -> LatencyMeasurement | LatencyError:
    if "measurement" in reply:
        return LatencyMeasurement.from_dict(reply["measurement"])
    if reply.get("memory"):
        return MemoryLimitError(f"{reply['error']}{limit_note}")
    return LatencyError(str(reply.get("error")))


def main(argv: list[str] | None = None) -> int:
    """Process entry: read one request from stdin, write one reply to stdout."""
    parser = argparse.ArgumentParser(prog="python -m iotnas.latency.worker")
    parser.add_argument("--memory-limit-mb", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        if args.memory_limit_mb is not None:
            limit_memory(args.memory_limit_mb)
        reply = handle(json.loads(sys.stdin.read()))
    except (json.JSONDecodeError, IotnasError) as exc:
        sys.stderr.write(f"iotnas worker: {exc}\n")
        return 2
    sys.stdout.write(json.dumps(reply))
    return 0


if __name__ == "__main__":
    sys.exit(main())
