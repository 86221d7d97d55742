"""Time models in a fresh process, speaking JSON over stdin and stdout.

A runtime keeps state between models (thread pools, allocator arenas, torch's
one-shot inter-op setting), so each model is timed in a process of its own:
:func:`run_jobs` starts ``python -m iotnas.latency.worker``, writes one JSON
request and reads one JSON reply. Nothing is ever unpickled.

Request: ``{"protocol": {...}, "jobs": [job, ...]}`` where a job is either
``{"runtime": "onnxruntime", "onnx_b64": "...", "target": str?, "settings": {...}}``
or ``{"runtime": "torch", "arch": {...}, "threads": int, "interop_threads": int,
"num_classes": int, "in_channels": int, "input_size": int}``.
Reply: ``{"results": [{"measurement": {...}} | {"error": "..."}, ...]}``.
"""

from __future__ import annotations

import base64
import binascii
import json
import subprocess
import sys
from typing import Any

from iotnas.errors import IotnasError, LatencyError
from iotnas.latency.measure import LatencyMeasurement, Protocol

#: Seconds allowed for a worker to start and load its runtime, on top of the protocol's caps.
STARTUP_ALLOWANCE_S = 60.0


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


def _run_job(job: Any, protocol: Protocol) -> LatencyMeasurement:
    from iotnas.latency import runtimes

    if not isinstance(job, dict):
        raise LatencyError(f"each job must be a JSON object, got {type(job).__name__}")
    runtime = job.get("runtime", "onnxruntime")
    if runtime == "onnxruntime":
        settings = runtimes.OrtSettings.from_dict(job.get("settings", {}))
        target = job.get("target")
        if target is not None and not isinstance(target, str):
            raise LatencyError("'target' must be a string")
        return runtimes.time_onnx(decode_onnx(job), settings=settings, protocol=protocol, target=target)
    if runtime == "torch":
        from iotnas.arch import Arch
        from iotnas.spaces import build

        arch = Arch.from_dict(job.get("arch"))
        in_channels, size = int(job.get("in_channels", 3)), int(job.get("input_size", 32))
        model = build(arch, num_classes=int(job.get("num_classes", 10)), in_channels=in_channels)
        return runtimes.time_torch(
            model,
            input_shape=(1, in_channels, size, size),
            threads=int(job.get("threads", 1)),
            interop_threads=int(job.get("interop_threads", 1)),
            protocol=protocol,
            target=arch.key,
        )
    raise LatencyError(f"unknown runtime {runtime!r}; choose onnxruntime or torch")


def handle(request: Any) -> dict[str, Any]:
    """Answer one request (in this process); errors per job are reported, not raised."""
    if not isinstance(request, dict) or not isinstance(request.get("jobs"), list):
        raise LatencyError("request must be a JSON object with a 'jobs' list")
    protocol = Protocol.from_dict(request.get("protocol", {}))
    results: list[dict[str, Any]] = []
    for job in request["jobs"]:
        try:
            results.append({"measurement": _run_job(job, protocol).to_dict()})
        except IotnasError as exc:
            results.append({"error": str(exc)})
    return {"results": results}


def run_jobs(
    jobs: list[dict[str, Any]], *, protocol: Protocol, timeout_s: float | None = None
) -> list[LatencyMeasurement | LatencyError]:
    """Time ``jobs`` one after another in one fresh worker process.

    Args:
        timeout_s: wall-clock limit for the whole process; by default the
            protocol's caps for every job plus a start-up allowance.

    Returns:
        One measurement, or the error that job raised, per job, in order.

    Raises:
        LatencyError: the worker could not start, crashed or ran out of time.
    """
    if timeout_s is None:
        per_job = 2 * protocol.max_s + protocol.warmup_s + 10.0  # timed cap, warm-up, load
        timeout_s = STARTUP_ALLOWANCE_S + per_job * len(jobs)
    payload = json.dumps({"protocol": protocol.to_dict(), "jobs": jobs})
    try:
        done = subprocess.run(
            [sys.executable, "-m", "iotnas.latency.worker"],
            input=payload,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise LatencyError(f"timing did not finish within {timeout_s:.0f} s; lower the protocol's max_s") from exc
    except OSError as exc:
        raise LatencyError(f"cannot start a timing process: {exc}") from exc
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no message"]
        raise LatencyError(f"timing process failed (exit {done.returncode}): {tail[0][:300]}")
    try:
        results = json.loads(done.stdout)["results"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise LatencyError(f"timing process answered malformed JSON: {exc}") from exc
    return [
        LatencyMeasurement.from_dict(r["measurement"]) if "measurement" in r else LatencyError(str(r.get("error")))
        for r in results
    ]


def main() -> int:
    """Process entry: read one request from stdin, write one reply to stdout."""
    try:
        reply = handle(json.loads(sys.stdin.read()))
    except (json.JSONDecodeError, IotnasError) as exc:
        sys.stderr.write(f"iotnas worker: {exc}\n")
        return 2
    sys.stdout.write(json.dumps(reply))
    return 0


if __name__ == "__main__":
    sys.exit(main())
