"""Calibrating predictors: time kernels and networks on the device, then fit.

:func:`calibrate` times the kernels of a set of calibration networks (in
batches, one fresh process per batch) and the networks themselves (one fresh
process each), then fits a :class:`~iotnas.latency.predictor.KernelPredictor`.
:func:`calibrate_nodes` profiles networks drawn from a study's laws on this
machine and fits a :class:`~iotnas.latency.predictor.NodePredictor`, adaptively.
:func:`fit_released` fits the operator-cost model on the released Raspberry Pi
timings, for devices you cannot reach; :func:`released_repeats` finds the networks those
timings hold more than once, the ceiling any predictor of them is judged against.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from iotnas.errors import DataError, IotnasError, LatencyError
from iotnas.latency.agent import AgentClient
from iotnas.latency.api import measure_many
from iotnas.latency.kernels import Kernel, arch_kernels
from iotnas.latency.measure import (
    LatencyMeasurement,
    Protocol,
    check_statistic,
    environment,
)
from iotnas.latency.nodes import NetworkProfile
from iotnas.latency.predictor import (
    DEFAULT_INPUT,
    CostModelPredictor,
    InputShape,
    KernelPredictor,
    NodePredictor,
    OperatorCostPredictor,
    Score,
    score,
)
from iotnas.latency.runtimes import OrtSettings

log = logging.getLogger(__name__)

#: Kernels are short and many: the run-count rule dominates, and 0.1 s keeps calibration to minutes.
KERNEL_PROTOCOL = Protocol(warmup_runs=10, warmup_s=0.02, min_runs=50, min_s=0.05, max_s=5.0)
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


@dataclasses.dataclass(frozen=True, slots=True)
class ReleasedTiming:
    """One released Raspberry Pi record: the authors' mean of 5 timed runs, their spread, the FLOPs they counted."""

    key: str
    mean_ms: float
    std_ms: float
    flops: float

    @property
    def weight(self) -> float:
        """Trust in the mean, for fitting: inverse variance of a 5-run mean (floored, so none dominates)."""
        sem = self.std_ms / self.mean_ms / math.sqrt(5)
        return 1.0 / (sem**2 + RELEASED_NOISE_FLOOR**2)


#: The relative error below which a released mean is not trusted more (its weight stops growing).
RELEASED_NOISE_FLOOR = 0.015


def released_records(path: str | Path) -> list[ReleasedTiming]:
    """Every record of the released ``results_RaspPi.json``.

    Raises:
        DataError: the file is missing or not in the released layout.
    """
    try:
        records = json.loads(Path(path).read_text(encoding="utf-8"))
        return [
            ReleasedTiming(key=f"{r['spacename'].removeprefix('random_net_')}/{r['law']}/{int(r['id'])}",
                           mean_ms=float(r["t_avg"]), std_ms=float(r["t_std"]), flops=float(r["flops"]))
            for r in records
        ]
    except OSError as exc:
        raise DataError(f"cannot read the released timings {path}: {exc.strerror}") from exc
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{path} is not the released results_RaspPi.json layout: {exc}") from exc


def released_timings(path: str | Path) -> list[tuple[str, float, float]]:
    """``(arch key, mean ms, released FLOPs)`` per record of the released ``results_RaspPi.json``."""
    return [(r.key, r.mean_ms, r.flops) for r in released_records(path)]


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
                  shape: InputShape = DEFAULT_INPUT,
                  progress: Progress | None = None) -> dict[str, LatencyMeasurement]:
    """Time whole networks built for ``shape``, one fresh process each; failures are logged and left out."""
    out: dict[str, LatencyMeasurement] = {}
    for i, key in enumerate(archs):
        (result,) = measure_many([key], device=device, settings=settings, protocol=protocol, **shape.build_options)
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


def calibrate(archs: Sequence[str], *, device: AgentClient | None = None, settings: OrtSettings | None = None,
              network_protocol: Protocol | None = None, kernel_protocol: Protocol = KERNEL_PROTOCOL,
              max_kernels: int | None = None, statistic: str = "median_ms", shape: InputShape = DEFAULT_INPUT,
              seed: int = 0, progress: Progress | None = None) -> tuple[KernelPredictor, Calibration]:
    """Time the calibration networks and their kernels on the device, and fit a kernel predictor.

    Args:
        archs: calibration architectures (keys); see :func:`sample_archs`.
        settings, network_protocol: ONNX Runtime settings and the networks' timing protocol (defaults: one
            thread, every optimisation; :class:`~iotnas.latency.measure.Protocol`'s defaults).
        max_kernels: time at most this many distinct kernels (a random subset); all by default.
        statistic: ``median_ms`` or ``cpu_median_ms`` (see :data:`STATISTICS`).
        shape: the images (channels, size) and classes the networks are built for; the predictor records it.

    Raises:
        LatencyError: too few kernels or networks could be timed.
        AgentError: the device agent is unreachable or refuses.
    """
    check_statistic(statistic)
    settings, network_protocol = settings or OrtSettings(), network_protocol or Protocol()
    start = time.perf_counter()
    traced = {key: arch_kernels(key, **shape.build_options) for key in archs}
    unique = {k.key: k for ks in traced.values() for k in ks}
    chosen = list(unique.values())
    if max_kernels is not None and len(chosen) > max_kernels:
        chosen = random.Random(seed).sample(chosen, max_kernels)
    kernels = time_kernels(chosen, device=device, settings=settings, protocol=kernel_protocol, progress=progress)
    networks = time_networks(archs, device=device, settings=settings, protocol=network_protocol, shape=shape,
                             progress=progress)
    seconds = time.perf_counter() - start
    env = (device.health()["environment"] if device is not None else environment())
    calibration = Calibration(kernels=kernels, networks=networks, seconds=seconds)
    predictor = fit_kernel_predictor(calibration, traced, settings=settings, environment=env, statistic=statistic,
                                     shape=shape, seed=seed)
    return predictor, calibration


def fit_kernel_predictor(calibration: Calibration, traced: dict[str, list[Kernel]], *, settings: OrtSettings,
                         environment: dict[str, Any], statistic: str = "median_ms", shape: InputShape = DEFAULT_INPUT,
                         seed: int = 0) -> KernelPredictor:
    """Fit a kernel predictor on a calibration's timings (``traced``: arch key -> its kernels, built for ``shape``)."""
    check_statistic(statistic)
    networks = calibration.networks
    return KernelPredictor.fit(
        kernel_ms={key: getattr(m, statistic) for key, m in calibration.kernels.items()},
        networks=[(traced[key], getattr(m, statistic)) for key, m in networks.items()],
        runtime="onnxruntime",
        settings=settings.to_dict(),
        info={"environment": environment, "statistic": statistic, "calibration_s": calibration.seconds,
              "calibration_archs": list(networks)},
        seed=seed,
    ).with_input(shape)


#: Below this many calibration networks, or held-out networks, a predictor's score is not to be trusted.
MIN_TRUSTED_NETWORKS = 60
MIN_TRUSTED_HELD_OUT = 30
#: Networks a round needs before its cross-validated errors steer the next one.
MIN_ADAPTIVE_NETWORKS = 10
#: Profiled runs per calibration network (node medians); warm-up runs before them.
PROFILE_RUNS = 30


@dataclasses.dataclass(frozen=True)
class NodeCalibration:
    """What a node calibration did: networks profiled and timed, per round, and the held-out score."""

    profiles: dict[str, NetworkProfile]  # arch key -> its optimised nodes and their times in context
    networks: dict[str, LatencyMeasurement]  # arch key -> the whole network timed per the protocol
    rounds: tuple[tuple[str, ...], ...]  # the networks each round added (the first evenly over the laws)
    held_out: dict[str, tuple[float, float]]  # arch key -> (predicted, measured) ms, never fitted on
    score: Score | None  # on the held-out networks (None: none were asked for)
    seconds: float  # wall time, timing and fitting together

    def warnings(self) -> list[str]:
        """Why the predictor may not be trusted yet (empty: no reason found)."""
        out = []
        if len(self.networks) < MIN_TRUSTED_NETWORKS:
            out.append(f"only {len(self.networks)} calibration networks (fewer than {MIN_TRUSTED_NETWORKS}): "
                       "the predictor has seen too few graphs; calibrate with more --networks")
        if self.score is None or self.score.n < MIN_TRUSTED_HELD_OUT:
            n = 0 if self.score is None else self.score.n
            out.append(f"only {n} held-out networks (fewer than {MIN_TRUSTED_HELD_OUT}): the score below is "
                       "a rough guide; raise --held-out")
        elif self.score.within_10 < 0.9:
            out.append(f"{self.score.within_10:.0%} of held-out networks within ±10 % (target 90 %): "
                       "calibrate with more --networks, or use the hybrid device mode with a wider margin")
        return out


def profile_networks(archs: Sequence[str], *, settings: OrtSettings, protocol: Protocol,
                     profile_runs: int = PROFILE_RUNS, shape: InputShape = DEFAULT_INPUT, stage: str = "networks",
                     progress: Progress | None = None) -> dict[str, NetworkProfile]:
    """Profile the nodes of networks built for ``shape`` in context and time each whole network, here.

    The whole network is timed per ``protocol`` in the process that profiled it, right after
    (:func:`~iotnas.latency.nodes.profile_onnx`), so node and network times share the machine's
    state of that minute. Failures are logged and left out.
    """
    from iotnas.latency.nodes import arch_onnx, profile_onnx

    profiles: dict[str, NetworkProfile] = {}
    for i, key in enumerate(archs):
        try:
            data = arch_onnx(key, **shape.build_options)
            profiles[key] = profile_onnx(data, settings=settings, runs=profile_runs, protocol=protocol)
        except IotnasError as exc:
            log.warning("could not time %s: %s", key, exc)
        if progress is not None:
            progress(stage, i + 1, len(archs))
    return profiles


def _stratum(key: str) -> str:
    return key.rsplit("/", 1)[0]  # "space/law"


def _draw(counts: dict[str, int], *, seed: int, exclude: set[str]) -> list[str]:
    """``counts[space/law]`` new architecture keys per law, none of ``exclude``."""
    out: list[str] = []
    for i, (law_ref, n) in enumerate(sorted(counts.items())):
        if n > 0:
            space, law = law_ref.split("/")
            out += sample_archs(n, seed=seed * 7919 + i, exclude=exclude | set(out), families=(space,),
                                laws={space: (law,)})
    return out


def _allocate(total: int, weights: dict[str, float]) -> dict[str, int]:
    """``total`` draws split over laws in proportion to ``weights`` (largest remainders)."""
    norm = sum(weights.values()) or 1.0
    shares = {k: total * w / norm for k, w in weights.items()}
    counts = {k: int(v) for k, v in shares.items()}
    for k in sorted(shares, key=lambda k: counts[k] - shares[k])[: total - sum(counts.values())]:
        counts[k] += 1
    return counts


def calibrate_nodes(laws: Sequence[str], *, networks: int = 120, held_out: int = 40, rounds: int = 3,
                    settings: OrtSettings | None = None, protocol: Protocol | None = None,
                    profile_runs: int = PROFILE_RUNS, statistic: str = "median_ms", shape: InputShape = DEFAULT_INPUT,
                    seed: int = 0, progress: Progress | None = None) -> tuple[NodePredictor, NodeCalibration]:
    """Profile and time networks drawn from ``laws`` on this machine, adaptively, and fit a node predictor.

    The first round spreads half the networks evenly over the laws; each later
    round draws the next share where the cross-validated error is highest (as
    nn-Meter samples more where its predictor is weak). ``held_out`` other
    networks, drawn evenly, are timed and scored at the end and never fitted on.

    Args:
        laws: ``space/law`` names, e.g. a study's laws expanded.
        networks: calibration networks in all rounds together.
        statistic: ``median_ms`` or ``cpu_median_ms`` (see :data:`STATISTICS`).
        shape: the images (channels, size) and classes the networks are built for (a study's data);
            the predictor records it and predicts networks built for it.

    Raises:
        LatencyError: too few networks could be timed, or a bad statistic.
    """
    check_statistic(statistic)
    if not laws:
        raise LatencyError("calibration needs at least one space/law to draw networks from")
    settings, protocol = settings or OrtSettings(), protocol or Protocol()
    start = time.perf_counter()
    rounds = max(1, rounds)
    sizes = [networks] if rounds == 1 else [networks // 2] + _split(networks - networks // 2, rounds - 1)
    profiles: dict[str, NetworkProfile] = {}
    added: list[tuple[str, ...]] = []
    weights = dict.fromkeys(laws, 1.0)
    for r, size in enumerate(sizes):
        keys = _draw(_allocate(size, weights), seed=seed + r, exclude=set(profiles))
        found = profile_networks(keys, settings=settings, protocol=protocol, profile_runs=profile_runs, shape=shape,
                                 stage=f"calibration round {r + 1}/{len(sizes)}", progress=progress)
        profiles.update(found)
        added.append(tuple(found))
        if r + 1 < len(sizes) and len(profiles) >= MIN_ADAPTIVE_NETWORKS:  # else the next round stays even
            weights = _law_errors(list(profiles), list(profiles.values()), statistic=statistic, laws=laws, seed=seed)
    predictor = NodePredictor.fit(list(profiles.values()), statistic=statistic, runtime="onnxruntime",
                                  settings=settings.to_dict(), seed=seed).with_input(shape)
    timed = {k: dataclasses.replace(p.timing, target=k) for k, p in profiles.items() if p.timing is not None}
    held = _draw(_allocate(held_out, dict.fromkeys(laws, 1.0)), seed=seed + 10_000, exclude=set(profiles))
    held_scores: dict[str, tuple[float, float]] = {}
    result_score = None
    if held:  # timed as the measuring mode times them: one fresh process each
        measured = time_networks(held, device=None, settings=settings, protocol=protocol, shape=shape,
                                 progress=progress)
        keys = list(measured)
        if keys:
            predicted = predictor.predict_many(keys)
            held_scores = {k: (ms, getattr(measured[k], statistic)) for k, ms in zip(keys, predicted)}
            result_score = score(predicted, [getattr(measured[k], statistic) for k in keys])
    seconds = time.perf_counter() - start
    env = environment()
    predictor.info.update({"environment": env, "statistic": statistic, "sessions": protocol.sessions,
                           "calibration_s": seconds,
                           "calibration_archs": list(timed), "laws": list(laws),
                           "held_out": None if result_score is None else result_score.to_dict()})
    return predictor, NodeCalibration(profiles=profiles, networks=timed, rounds=tuple(added), held_out=held_scores,
                                      score=result_score, seconds=seconds)


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (i < total % parts) for i in range(parts)]


def _law_errors(keys: Sequence[str], profiles: Sequence[NetworkProfile], *, statistic: str, laws: Sequence[str],
                seed: int) -> dict[str, float]:
    """Each law's cross-validated mean absolute relative error (with a floor, so no law is starved)."""
    import numpy as np

    m = np.array([p.network_ms(statistic) for p in profiles])
    rel = np.abs(NodePredictor.cross_validated(profiles, statistic=statistic, seed=seed) - m) / m
    errors = {law: [] for law in laws}
    for key, e in zip(keys, rel):
        errors.setdefault(_stratum(key), []).append(float(e))
    overall = float(rel.mean()) if rel.size else 1.0
    return {law: max(float(np.mean(v)) if v else overall, 0.25 * overall, 1e-3) for law, v in errors.items()
            if law in laws}


def fit_released(path: str | Path, *, seed: int = 0,
                 progress: Callable[[int, int], None] | None = None) -> OperatorCostPredictor:
    """Fit the operator-cost model on every released Raspberry Pi timing (torch eager, mean of 5 runs).

    Each mean is weighted by how much its 5 runs agree (:attr:`ReleasedTiming.weight`).
    """
    records = released_records(path)
    networks = []
    for i, r in enumerate(records):
        networks.append((r.key, arch_kernels(r.key), r.mean_ms))
        if progress is not None:
            progress(i + 1, len(records))
    info = {"source": "released results_RaspPi.json (Raspberry Pi 3B+, torch eager, mean of 5 runs)",
            "runtime": "torch"}
    return OperatorCostPredictor.fit(networks, weights=[r.weight for r in records], info=info, seed=seed)


def released_repeats(records: Sequence[ReleasedTiming]) -> list[tuple[ReleasedTiming, ...]]:
    """Groups of two or more records that time the same network (identical arguments, another law or id).

    The Pi timed each record in a session of its own, so a repeat shows how far two of its
    sessions disagree on one network: what no predictor of these timings can do better than.
    """
    from iotnas.arch import Arch

    groups: dict[str, list[ReleasedTiming]] = {}
    for r in records:
        arch = Arch.parse(r.key)
        groups.setdefault(Arch.from_args(arch.space, arch.args).key, []).append(r)
    return [tuple(g) for g in groups.values() if len(g) > 1]


def repeat_score(repeats: Sequence[Sequence[ReleasedTiming]]) -> Score:
    """Every record of a repeat as the prediction of each other one: the device's agreement with itself."""
    pairs = [(a.mean_ms, b.mean_ms) for group in repeats for a in group for b in group if a is not b]
    return score([p for p, _ in pairs], [m for _, m in pairs])


def cross_validate_released(networks: Sequence[tuple[ReleasedTiming, Sequence[Kernel]]], *, folds: int = 5,
                            seed: int = 0, tree_seeds: Sequence[int] = ()) -> dict[str, Any]:
    """Cross-validated predictions of the operator-cost model, the earlier cost-feature trees and the FLOPs line.

    Args:
        networks: each released record with its traced kernels.
        seed: the folds' shuffle and the trees' subsampling.
        tree_seeds: also fit the operator-cost model with these seeds for its trees, in the same
            folds: how much its score moves with the trees' random subsamples alone.

    Returns:
        ``{"ops": predictions, "cost": predictions, "flops": predictions, "measured": values,
        "ops_by_tree_seed": {tree seed: predictions}}`` (``seed`` and every one of ``tree_seeds``),
        predictions in input order.
    """
    import numpy as np
    from sklearn.model_selection import KFold

    from iotnas.latency.predictor import FlopsPredictor

    measured = np.array([r.mean_ms for r, _ in networks])
    by_seed = {s: np.empty_like(measured) for s in dict.fromkeys((seed, *tree_seeds))}
    out = {"ops": by_seed[seed], "cost": np.empty_like(measured), "flops": np.empty_like(measured)}
    for train, test in KFold(folds, shuffle=True, random_state=seed).split(measured):
        fold = [(networks[i][0].key, networks[i][1], measured[i]) for i in train]
        for tree_seed, into in by_seed.items():
            ops = OperatorCostPredictor.fit(fold, weights=[networks[i][0].weight for i in train], seed=tree_seed)
            into[test] = [ops.predict_network(networks[i][0].key, networks[i][1]) for i in test]
        cost_model = CostModelPredictor.fit([(networks[i][1], measured[i]) for i in train], seed=seed)
        out["cost"][test] = [cost_model.predict_kernels(networks[i][1]) for i in test]
        line = FlopsPredictor.fit([networks[i][0].flops for i in train], measured[train])
        out["flops"][test] = [line.predict_flops(networks[i][0].flops) for i in test]
    return {**{name: values.tolist() for name, values in out.items()}, "measured": measured.tolist(),
            "ops_by_tree_seed": {s: values.tolist() for s, values in by_seed.items()}}
