"""Calibrating predictors: time kernels and networks on the device, then fit.

:func:`calibrate` times the kernels of a set of calibration networks (in
batches, one fresh process per batch) and the networks themselves (one fresh
process each), then fits a :class:`~iotnas.latency.predictor.KernelPredictor`.
:func:`fit_released` fits the whole-network model on the released Raspberry Pi
timings, for devices you cannot reach.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from iotnas.errors import DataError, LatencyError
from iotnas.latency.agent import AgentClient
from iotnas.latency.api import measure_many
from iotnas.latency.kernels import Kernel, arch_kernels
from iotnas.latency.measure import LatencyMeasurement, Protocol, environment
from iotnas.latency.predictor import CostModelPredictor, KernelPredictor
from iotnas.latency.runtimes import OrtSettings

log = logging.getLogger(__name__)

#: Kernels are short and many: the run-count rule dominates, and 0.1 s keeps calibration to minutes.
KERNEL_PROTOCOL = Protocol(warmup_runs=10, warmup_s=0.02, min_runs=50, min_s=0.05, max_s=5.0)
#: What a predictor learns: the wall-clock median (default), or the median thread CPU time
#: (steadier on a machine shared with other work; meaningful with one thread).
STATISTICS = ("median_ms", "cpu_median_ms")
#: Kernel graphs per timing process (and per agent request, which stays well under its size limit).
KERNEL_BATCH = 32
#: The five families of the released Raspberry Pi timings.
RELEASED_FAMILIES = ("densenet", "mobilenetv2", "googlenet", "pnasnet", "resnext")

Progress = Callable[[str, int, int], None]


@dataclasses.dataclass(frozen=True)
class Calibration:
    """What a calibration timed: kernels (kernel key -> measurement) and networks (arch key -> measurement)."""

    kernels: dict[str, LatencyMeasurement]
    networks: dict[str, LatencyMeasurement]
    seconds: float  # wall time of the timing, this machine and device together


def released_timings(path: str | Path) -> list[tuple[str, float, float]]:
    """``(arch key, mean ms, released FLOPs)`` per record of the released ``results_RaspPi.json``.

    Raises:
        DataError: the file is missing or not in the released layout.
    """
    try:
        records = json.loads(Path(path).read_text(encoding="utf-8"))
        return [
            (f"{r['spacename'].removeprefix('random_net_')}/{r['law']}/{int(r['id'])}", float(r["t_avg"]),
             float(r["flops"]))
            for r in records
        ]
    except OSError as exc:
        raise DataError(f"cannot read the released timings {path}: {exc.strerror}") from exc
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{path} is not the released results_RaspPi.json layout: {exc}") from exc


def sample_archs(n: int, *, seed: int, exclude: set[str] = frozenset(), families: Sequence[str] = RELEASED_FAMILIES,
                 laws: dict[str, Sequence[str]] | None = None) -> list[str]:
    """``n`` architecture keys drawn evenly over families and their laws, ids from ``seed``.

    Draws that cannot run are skipped (and logged), as the released data skips them.
    """
    from iotnas.arch import Arch
    from iotnas.spaces import get_space, runnable

    rng = random.Random(seed)
    out: list[str] = []
    seen = set(exclude)
    invalid = 0
    while len(out) < n:
        family = families[len(out) % len(families)]
        law = rng.choice(list((laws or {}).get(family) or get_space(family).laws))
        arch = Arch(family, law, rng.randrange(0, 100_000))
        if arch.key in seen:
            continue
        seen.add(arch.key)
        if runnable(arch):
            out.append(arch.key)
        else:
            invalid += 1
    if invalid:
        log.info("skipped %d drawn networks that cannot run", invalid)
    return out


def time_networks(archs: Sequence[str], *, device: AgentClient | None, settings: OrtSettings, protocol: Protocol,
                  progress: Progress | None = None) -> dict[str, LatencyMeasurement]:
    """Time whole networks, one fresh process each; failures are logged and left out."""
    out: dict[str, LatencyMeasurement] = {}
    for i, key in enumerate(archs):
        (result,) = measure_many([key], device=device, settings=settings, protocol=protocol)
        if isinstance(result, LatencyError):
            log.warning("could not time %s: %s", key, result)
        else:
            out[key] = result
        if progress is not None:
            progress("networks", i + 1, len(archs))
    return out


def time_kernels(kernels: Sequence[Kernel], *, device: AgentClient | None, settings: OrtSettings,
                 protocol: Protocol = KERNEL_PROTOCOL,
                 progress: Progress | None = None) -> dict[str, LatencyMeasurement]:
    """Time one-kernel graphs in batches of :data:`KERNEL_BATCH` per fresh process; key -> measurement."""
    out: dict[str, LatencyMeasurement] = {}
    for start in range(0, len(kernels), KERNEL_BATCH):
        batch = kernels[start:start + KERNEL_BATCH]
        results = measure_many([k.onnx() for k in batch], device=device, settings=settings, protocol=protocol,
                               isolate=False)
        for kernel, result in zip(batch, results):
            if isinstance(result, LatencyError):
                log.warning("could not time kernel %s: %s", kernel.key, result)
            else:
                out[kernel.key] = result
        if progress is not None:
            progress("kernels", min(start + KERNEL_BATCH, len(kernels)), len(kernels))
    return out


def calibrate(archs: Sequence[str], *, device: AgentClient | None = None, settings: OrtSettings = OrtSettings(),
              network_protocol: Protocol = Protocol(), kernel_protocol: Protocol = KERNEL_PROTOCOL,
              max_kernels: int | None = None, statistic: str = "median_ms", seed: int = 0,
              progress: Progress | None = None) -> tuple[KernelPredictor, Calibration]:
    """Time the calibration networks and their kernels on the device, and fit a kernel predictor.

    Args:
        archs: calibration architectures (keys); see :func:`sample_archs`.
        max_kernels: time at most this many distinct kernels (a random subset); all by default.
        statistic: ``median_ms`` or ``cpu_median_ms`` (see :data:`STATISTICS`).

    Raises:
        LatencyError: too few kernels or networks could be timed.
        AgentError: the device agent is unreachable or refuses.
    """
    if statistic not in STATISTICS:
        raise LatencyError(f"statistic must be one of {', '.join(STATISTICS)}, got {statistic!r}")
    start = time.perf_counter()
    traced = {key: arch_kernels(key) for key in archs}
    unique = {k.key: k for ks in traced.values() for k in ks}
    chosen = list(unique.values())
    if max_kernels is not None and len(chosen) > max_kernels:
        chosen = random.Random(seed).sample(chosen, max_kernels)
    kernels = time_kernels(chosen, device=device, settings=settings, protocol=kernel_protocol, progress=progress)
    networks = time_networks(archs, device=device, settings=settings, protocol=network_protocol, progress=progress)
    seconds = time.perf_counter() - start
    env = (device.health()["environment"] if device is not None else environment())
    calibration = Calibration(kernels=kernels, networks=networks, seconds=seconds)
    predictor = fit_kernel_predictor(calibration, traced, settings=settings, environment=env, statistic=statistic,
                                     seed=seed)
    return predictor, calibration


def fit_kernel_predictor(calibration: Calibration, traced: dict[str, list[Kernel]], *, settings: OrtSettings,
                         environment: dict[str, Any], statistic: str = "median_ms", seed: int = 0) -> KernelPredictor:
    """Fit a kernel predictor on a calibration's timings (``traced``: arch key -> its kernels)."""
    if statistic not in STATISTICS:
        raise LatencyError(f"statistic must be one of {', '.join(STATISTICS)}, got {statistic!r}")
    networks = calibration.networks
    return KernelPredictor.fit(
        kernel_ms={key: getattr(m, statistic) for key, m in calibration.kernels.items()},
        networks=[(traced[key], getattr(m, statistic)) for key, m in networks.items()],
        runtime="onnxruntime",
        settings=settings.to_dict(),
        info={"environment": environment, "statistic": statistic, "calibration_s": calibration.seconds,
              "calibration_archs": list(networks)},
        seed=seed,
    )


def fit_released(path: str | Path, *, seed: int = 0,
                 progress: Callable[[int, int], None] | None = None) -> CostModelPredictor:
    """Fit the whole-network cost model on every released Raspberry Pi timing (mean ms, 10-run protocol)."""
    rows = released_timings(path)
    networks = []
    for i, (key, ms, _) in enumerate(rows):
        networks.append((arch_kernels(key), ms))
        if progress is not None:
            progress(i + 1, len(rows))
    info = {"source": "released results_RaspPi.json (Raspberry Pi 3B+, torch eager, mean of 5 runs)",
            "runtime": "torch"}
    return CostModelPredictor.fit(networks, info=info, seed=seed)


def cross_validate_released(networks: Sequence[tuple[Sequence[Kernel], float, float]], *, folds: int = 5,
                            seed: int = 0) -> dict[str, Any]:
    """Cross-validated predictions of the cost model and of the FLOPs line on released timings.

    Args:
        networks: ``(kernels, measured ms, released FLOPs)`` per network.

    Returns:
        ``{"cost": predictions, "flops": predictions, "measured": values}``, in input order.
    """
    import numpy as np
    from sklearn.model_selection import KFold

    from iotnas.latency.predictor import FlopsPredictor

    measured = np.array([ms for _, ms, _ in networks])
    cost_pred, flops_pred = np.empty_like(measured), np.empty_like(measured)
    for train, test in KFold(folds, shuffle=True, random_state=seed).split(measured):
        model = CostModelPredictor.fit([(networks[i][0], networks[i][1]) for i in train], seed=seed)
        cost_pred[test] = [model.predict_kernels(networks[i][0]) for i in test]
        line = FlopsPredictor.fit([networks[i][2] for i in train], measured[train])
        flops_pred[test] = [line.predict_flops(networks[i][2]) for i in test]
    return {"cost": cost_pred.tolist(), "flops": flops_pred.tolist(), "measured": measured.tolist()}
