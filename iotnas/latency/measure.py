"""The timing protocol and the value it produces.

A measurement is batch 1, explicit thread settings, a warm-up, then timed runs
with :func:`time.perf_counter_ns` until both a run count and a duration are
reached (with a cap), summarised by the median, p90, IQR and coefficient of
variation, beside the environment it was taken in. The paper's protocol (10
runs, first 5 dropped, mean of ``time.time()``) had a CV above 10 % for about a
third of its models; this one reports its noise so the reader can judge.

This module imports neither torch nor onnxruntime, so the device agent can use
it on a board that has only the runtime.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import platform
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

from iotnas.errors import IotnasError, LatencyError

#: Below this many timed runs the quantiles mean little; a slow model stops at
#: ``max_s`` only once it has this many.
MIN_RUNS_FLOOR = 10
#: Most warm-up or timed runs a protocol may ask for (the duration caps end timing sooner anyway).
MAX_RUNS = 100_000
#: Longest any protocol duration may be, in seconds.
MAX_PROTOCOL_S = 3600.0
#: Most runtime sessions one measurement may time (each loads the graph anew and is timed per the protocol).
MAX_SESSIONS = 64
#: Most threads any runtime setting may ask for; where the timing happens, the cores it may use bound it further.
MAX_THREADS = 256
_NS_PER_MS = 1_000_000
#: What a timing is summarised by: the wall-clock median, or the median thread CPU time, which time spent
#: waiting for a core (another process, another tenant of a virtual machine) does not inflate; it is
#: meaningful with one thread, where the runtime computes in the calling thread.
STATISTICS = ("median_ms", "cpu_median_ms")


def brief(value: Any) -> str:
    """A short, safe rendering of a value for an error message (a request may hold megabytes, or deep nesting)."""
    if isinstance(value, str):
        return repr(value[:40]) + ("..." if len(value) > 40 else "")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**18:  # str() of a huge int fails
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    if isinstance(value, Mapping):
        return "a JSON object"
    return "a JSON array" if isinstance(value, list) else f"a {type(value).__name__}"


def check_int(
    value: Any, *, field: str, minimum: int, maximum: int, note: str = "", error: type[IotnasError] = LatencyError
) -> int:
    """``value`` if it is an integer (not a bool, not 2.0) within the bounds, else ``error`` naming field and bounds."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise error(f"{field} must be an integer from {minimum} to {maximum}{note}, got {brief(value)}")
    return value


def check_number(value: Any, *, field: str, minimum: float, maximum: float) -> float:
    """``value`` as a float if it is a finite number within the bounds (NaN and infinities fail the comparison)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not minimum <= value <= maximum:
        raise LatencyError(f"{field} must be a number from {minimum:g} to {maximum:g}, got {brief(value)}")
    return float(value)


def check_statistic(statistic: str) -> str:
    """``statistic`` if it names one of :data:`STATISTICS`.

    Raises:
        LatencyError: naming the statistics there are.
    """
    if statistic not in STATISTICS:
        raise LatencyError(f"statistic must be one of {', '.join(STATISTICS)}, got {statistic!r}")
    return statistic


def check_bool(value: Any, *, field: str) -> bool:
    """``value`` if it is a real boolean: JSON ``1`` or ``"false"`` is a mistake, not a truth value."""
    if not isinstance(value, bool):
        raise LatencyError(f"{field} must be true or false, got {brief(value)}")
    return value


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and ``taskset`` narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_threads(
    value: Any, *, field: str = "threads", remote: bool = False, error: type[IotnasError] = LatencyError
) -> int:
    """A thread count for timing: an integer from 1 to the cores this process may use.

    More threads than cores only oversubscribes them, and each thread costs
    memory, so a huge count is refused rather than attempted.

    Args:
        remote: the threads are for a device agent, which checks them against
            its own cores; here only :data:`MAX_THREADS` applies.
        error: the error to raise (a configuration file raises ``ConfigError``).
    """
    if remote:
        return check_int(value, field=field, minimum=1, maximum=MAX_THREADS, error=error)
    return check_int(
        value, field=field, minimum=1, maximum=usable_cores(), note=" (the cores this process may use)", error=error
    )


def check_keys(data: Any, known: Iterable[str], *, what: str) -> None:
    """Refuse a JSON value that is not an object, or names keys outside ``known``.

    Raises:
        LatencyError: naming ``what`` and the keys it knows.
    """
    if not isinstance(data, Mapping):
        raise LatencyError(f"{what} must be a JSON object, got {brief(data)}")
    unknown = sorted(set(data) - set(known))
    if unknown:
        shown = ", ".join(brief(k) for k in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise LatencyError(f"unknown {what} keys {shown}; known: {sorted(known)}")


def check_json_fields(cls: type, data: Any, *, what: str) -> None:
    """:func:`check_keys` with the field names of the dataclass ``cls``."""
    check_keys(data, {f.name for f in dataclasses.fields(cls)}, what=what)


class JsonSettings:
    """Settings that travel as a JSON object (to a device agent, in a predictor file)."""

    __slots__ = ()
    WHAT: ClassVar[str]  # how messages name them

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Any:
        """Build from a JSON object; unknown, mistyped or out-of-bounds keys are refused."""
        check_json_fields(cls, data, what=cls.WHAT)
        return cls(**data)


@dataclasses.dataclass(frozen=True, slots=True)
class Protocol(JsonSettings):
    """How long to warm up and how many runs to time.

    Warm-up ends once ``warmup_runs`` runs are done and ``warmup_s`` seconds have
    passed, or once ``warmup_max_s`` seconds have passed; timing ends once ``min_runs`` runs are done and ``min_s`` seconds have
    passed, or once ``max_s`` seconds have passed (with at least
    :data:`MIN_RUNS_FLOOR` runs). The defaults satisfy "warm-up >= 10 runs,
    >= 50 timed runs and >= 1 s". Run counts are integers up to :data:`MAX_RUNS`
    and durations finite, up to :data:`MAX_PROTOCOL_S`: a protocol may come from
    a request, and must not hold a timing process forever.

    ``sessions`` > 1 loads the graph into that many runtime sessions one after
    another (PyTorch: times the module that many times), each warmed up and timed
    as above, and the measurement's medians are the mean of the sessions' medians.
    On some machines an ONNX Runtime session settles in a fast or a slow mode for
    its whole life (one network: 0.11 or 0.19 ms per session), so one session's
    median is a draw of the mode and the mean over many is steadier; where
    sessions agree (``benchmarks/bench_timing.py`` tells), one is enough.
    """

    WHAT = "protocol"

    warmup_runs: int = 10
    warmup_s: float = 0.25  # seconds; lets caches, clocks and thread pools settle
    warmup_max_s: float = 1.0  # seconds; a slow model stops warming up here (>= 1 run)
    min_runs: int = 50
    min_s: float = 1.0  # seconds of timed runs
    max_s: float = 30.0  # seconds; a cap so a slow model cannot stall a study
    sessions: int = 1  # runtime sessions timed, one after another; the figure is the mean of their medians

    @classmethod
    def timing_for(cls, min_s: float | None, sessions: int | None = None) -> Protocol:
        """The default protocol, timing each of ``sessions`` sessions (None: one) for at least ``min_s``
        seconds (None: its own 1 s); the cap is raised to ``min_s`` where it would fall below it."""
        default = cls()
        seconds = {} if min_s is None else {"min_s": min_s, "max_s": max(default.max_s, min_s)}
        return cls(**seconds, sessions=default.sessions if sessions is None else sessions)

    def __post_init__(self) -> None:
        for name, floor in (("warmup_runs", 1), ("min_runs", MIN_RUNS_FLOOR)):
            check_int(getattr(self, name), field=f"protocol.{name}", minimum=floor, maximum=MAX_RUNS)
        check_int(self.sessions, field="protocol.sessions", minimum=1, maximum=MAX_SESSIONS)
        for name in ("warmup_s", "warmup_max_s", "min_s", "max_s"):  # stored as floats, so JSON 1 and 1.0 agree
            seconds = check_number(getattr(self, name), field=f"protocol.{name}", minimum=0.0, maximum=MAX_PROTOCOL_S)
            object.__setattr__(self, name, seconds)
        if not (self.warmup_s <= self.warmup_max_s and self.min_s <= self.max_s) or self.max_s <= 0:
            raise LatencyError(
                f"protocol durations must satisfy warmup_s <= warmup_max_s, min_s <= max_s, max_s > 0; got "
                f"warmup_s={self.warmup_s} (<= warmup_max_s={self.warmup_max_s}), min_s={self.min_s}, max_s={self.max_s}"
            )



@dataclasses.dataclass(frozen=True, slots=True)
class LatencyMeasurement:
    """One model timed with one runtime and one set of settings.

    ``target`` names what was timed (an architecture key, or ``onnx:<sha256 prefix>``);
    ``runtime`` and ``settings`` (threads and the runtime's options, as sorted
    pairs) are part of its identity, see :attr:`key`. ``environment`` (CPU,
    governor, versions) is kept beside it, as sorted pairs. Over several
    sessions (``n_sessions``) the medians are the mean of the sessions' medians
    and the other figures are of all timed runs together.
    """

    target: str
    runtime: str
    settings: tuple[tuple[str, Any], ...]
    median_ms: float
    p90_ms: float
    iqr_ms: float
    mean_ms: float
    min_ms: float
    cv: float  # standard deviation / mean of the timed runs
    cpu_median_ms: float  # median thread CPU time per run: immune to being descheduled (1 thread only)
    n_runs: int
    n_warmup: int
    timed_s: float
    input_shape: tuple[int, ...]
    environment: tuple[tuple[str, Any], ...] = ()
    n_sessions: int = 1

    @property
    def key(self) -> str:
        """Stable identity: target, runtime, settings and input image (not the environment).

        The image's channels and size count: a 1-channel model differs from its RGB twin in its
        first layer, so its timing is not the RGB one's.
        """
        settings = ",".join(f"{k}={v}" for k, v in self.settings)
        image = "x".join(str(n) for n in self.input_shape[1:])
        return f"{self.target}|{self.runtime}|{settings}|{image}"

    @property
    def latency_ms(self) -> float:
        """The figure to compare against a limit: the median."""
        return self.median_ms

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["settings"] = dict(self.settings)
        data["environment"] = dict(self.environment)
        data["input_shape"] = list(self.input_shape)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any) -> LatencyMeasurement:
        """Rebuild from :meth:`to_dict` output.

        Raises:
            LatencyError: a field is missing or has the wrong type.
        """
        if not isinstance(data, Mapping):
            raise LatencyError(f"a latency measurement must be a JSON object, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in data and n not in ("environment", "n_sessions")]
        if missing:
            raise LatencyError(f"latency measurement is missing fields {missing}")
        try:
            values = {n: data[n] for n in names if n in data}
            values["settings"] = _pairs(values["settings"])
            values["environment"] = _pairs(values.get("environment", {}))
            values["input_shape"] = tuple(int(v) for v in values["input_shape"])
            for name in ("median_ms", "p90_ms", "iqr_ms", "mean_ms", "min_ms", "cv", "cpu_median_ms", "timed_s"):
                values[name] = float(values[name])
            for name in ("n_runs", "n_warmup", "n_sessions"):
                if name in values:
                    values[name] = int(values[name])
            return cls(**values)
        except (TypeError, ValueError, AttributeError) as exc:
            raise LatencyError(f"malformed latency measurement: {exc}") from exc

    @classmethod
    def from_json(cls, text: str) -> LatencyMeasurement:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise LatencyError(f"latency measurement is not valid JSON: {exc}") from exc


def _pairs(mapping: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((str(k), v) for k, v in dict(mapping).items()))


@dataclasses.dataclass(frozen=True, slots=True)
class TimedRuns:
    """What one session's timing produced: each timed run's wall and thread CPU durations (ns), and how many
    warm-up runs came first."""

    wall_ns: list[int]
    cpu_ns: list[int]
    n_warmup: int


def run_protocol(run_once: Callable[[], object], protocol: Protocol) -> TimedRuns:
    """Warm up, then time ``run_once`` per the protocol (one session: ``protocol.sessions`` is the caller's).

    Each run is timed by the wall clock (:func:`time.perf_counter_ns`) and by
    the calling thread's CPU clock (:func:`time.thread_time_ns`). With one
    thread the runtime computes in the calling thread, so the CPU time leaves
    out the time the process waited for a core: on a shared machine it is the
    steadier figure.
    """
    start = time.perf_counter_ns()
    n_warmup = 0
    while True:
        run_once()
        n_warmup += 1
        elapsed = time.perf_counter_ns() - start
        if (n_warmup >= protocol.warmup_runs and elapsed >= protocol.warmup_s * 1e9) or (
            elapsed >= protocol.warmup_max_s * 1e9
        ):
            break
    samples: list[int] = []
    cpu: list[int] = []
    start = time.perf_counter_ns()
    min_ns, max_ns = protocol.min_s * 1e9, protocol.max_s * 1e9
    while True:
        c0 = time.thread_time_ns()
        t0 = time.perf_counter_ns()
        run_once()
        t1 = time.perf_counter_ns()
        cpu.append(time.thread_time_ns() - c0)
        samples.append(t1 - t0)
        elapsed = t1 - start
        if len(samples) >= protocol.min_runs and elapsed >= min_ns:
            break
        if elapsed >= max_ns and len(samples) >= MIN_RUNS_FLOOR:
            break
    return TimedRuns(wall_ns=samples, cpu_ns=cpu, n_warmup=n_warmup)


def summarize(samples_ns: list[int]) -> dict[str, float]:
    """Median, p90, IQR, mean, min (ms) and CV of timed runs (linear-interpolated quantiles)."""
    if not samples_ns:
        raise LatencyError("no timed runs to summarise")
    xs = sorted(s / _NS_PER_MS for s in samples_ns)
    n = len(xs)

    def quantile(q: float) -> float:
        pos = q * (n - 1)
        lo = int(pos)
        hi = min(lo + 1, n - 1)
        return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)

    mean = sum(xs) / n
    var = sum((x - mean) ** 2 for x in xs) / (n - 1) if n > 1 else 0.0
    return {
        "median_ms": quantile(0.5),
        "p90_ms": quantile(0.9),
        "iqr_ms": quantile(0.75) - quantile(0.25),
        "mean_ms": mean,
        "min_ms": xs[0],
        "cv": (var**0.5) / mean if mean > 0 else 0.0,
    }


def make_measurement(
    *,
    target: str,
    runtime: str,
    settings: Mapping[str, Any],
    sessions: Sequence[TimedRuns],
    input_shape: tuple[int, ...],
    environment: Mapping[str, Any],
) -> LatencyMeasurement:
    """Summarise the timed runs of one or more sessions into a :class:`LatencyMeasurement`.

    The medians are the mean of the sessions' medians (one session: its median), so each session counts
    alike however many runs it fitted in; the other figures are of all runs together.
    """
    if not sessions:
        raise LatencyError("no timed sessions to summarise")
    wall = [ns for s in sessions for ns in s.wall_ns]
    summary = summarize(wall)
    summary["median_ms"] = _mean_of_medians([s.wall_ns for s in sessions])
    return LatencyMeasurement(
        target=target,
        runtime=runtime,
        settings=_pairs(settings),
        n_runs=len(wall),
        n_warmup=sum(s.n_warmup for s in sessions),
        timed_s=sum(wall) / 1e9,
        input_shape=tuple(input_shape),
        environment=_pairs(environment),
        cpu_median_ms=_mean_of_medians([s.cpu_ns for s in sessions]),
        n_sessions=len(sessions),
        **summary,
    )


def _mean_of_medians(sessions_ns: Sequence[list[int]]) -> float:
    return sum(summarize(ns)["median_ms"] for ns in sessions_ns) / len(sessions_ns)


def _read_first(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def _cpu_model() -> str:
    text = _read_first("/proc/cpuinfo") or ""
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("model name", "Model", "Hardware"):
            return value.strip()
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(*, packages: tuple[str, ...] = ("numpy", "onnxruntime", "torch")) -> dict[str, Any]:
    """Where a measurement was taken: CPU, governor (where readable), OS, library versions.

    Reads versions from package metadata, so it imports nothing heavy.
    """
    env: dict[str, Any] = {
        "hostname": platform.node(),
        "cpu": _cpu_model(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "governor": _read_first("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }
    for package in packages:
        env[package] = _version(package)
    return env
