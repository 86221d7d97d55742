"""Train mode's latency sources: timing on this machine or a device agent, a calibrated predictor, or both.

The hybrid source (a measuring device with a predictor) screens the whole pool
with the predictor and sends to the device only the candidates the prediction
cannot decide: a prediction is trusted within a relative ``margin``, so a
candidate is surely fast enough when ``predicted * (1 + margin) <= limit``,
surely too slow when ``predicted * (1 - margin) > limit``, and undecided in
between (or, with ``measure = "every"``, whenever it is not surely too slow).
The workflow asks :meth:`HybridLatency.undecided` before it rejects or trains a
candidate on a prediction, and measures those with :meth:`HybridLatency.measure`.
:meth:`HybridLatency.rank` orders the candidates a strategy ranks equally: those the
prediction settles first, then the undecided ones, likeliest to pass first.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from iotnas.arch import Arch
from iotnas.data import Dataset
from iotnas.errors import ConfigError
from iotnas.store import Latency
from iotnas.study import Study


class MeasuredLatency:
    """Times each candidate when it is proposed, here or on a device agent (not cheap: ``[device] min_s``, 1 s, each)."""

    cheap = False

    def __init__(self, study: Study, dataset: Dataset):
        self.key = study.device.key
        self.identity: dict[str, Any] | None = None
        self._device = study.device
        self._geometry = {"num_classes": dataset.num_classes, "in_channels": dataset.in_channels}
        self._client = None
        if study.device.kind == "agent":
            from iotnas.latency import AgentClient
            from iotnas.latency.agent import identity_key

            token_file = study.device.token_file  # relative to the study file; None: $IOTNAS_AGENT_TOKEN
            self._client = AgentClient.connect(study.device.url,
                                               token_file=None if token_file is None else study.resolve(token_file))
            # The device, not its address, names the figures: a board whose URL changed keeps them.
            self.identity = self._client.identity()
            self.key = f"agent:{identity_key(self.identity)}:{study.device.runtime}:t{study.device.threads}"
        if dataset.in_channels != 3:  # another first layer, another figure (RGB keys stay as they always were)
            self.key += f":in{dataset.in_channels}"

    def latency(self, arch: Arch) -> Latency:
        from iotnas.latency import Protocol, measure_latency

        m = measure_latency(arch, runtime=self._device.runtime, threads=self._device.threads, device=self._client,
                            protocol=Protocol.timing_for(self._device.min_s, self._device.sessions), **self._geometry)
        return Latency(arch_key=arch.key, device_key=self.key, source="measured", median_ms=m.median_ms,
                       detail=m.to_dict())


class PredictedLatency:
    """Latency from a predictor calibrated on the device: cheap, so the whole pool is screened first.

    The networks it predicts are built for the study's data: its classes, and its channels,
    which must be those the predictor was calibrated for (a first layer it never saw is refused).
    """

    cheap = True
    identity = None

    def __init__(self, study: Study, dataset: Dataset):
        from iotnas.latency import LatencyPredictor

        self.key = study.device.key
        path = study.resolve(study.device.predictor)
        predictor = LatencyPredictor.load(path)
        calibrated = predictor.input_shape
        if calibrated.channels != dataset.in_channels:
            raise ConfigError(
                f"device.predictor: {path.name} was calibrated for {calibrated.channels}-channel images but the "
                f"study's data ({dataset.name}) has {dataset.in_channels}-channel images; calibrate one for it "
                "with `iotnas latency calibrate --study STUDY.toml`")
        self._predictor = predictor.with_input(dataclasses.replace(calibrated, classes=dataset.num_classes))

    def latency(self, arch: Arch) -> Latency:
        return Latency(arch_key=arch.key, device_key=self.key, source="predicted",
                       median_ms=float(self._predictor.predict(arch)), detail={})


#: The hybrid mode's trusted relative error of a prediction, unless the study sets ``[device] margin``.
DEFAULT_MARGIN = 0.15


class HybridLatency:
    """Predicts the whole pool, then measures on the device what the prediction cannot decide."""

    cheap = True

    def __init__(self, study: Study, dataset: Dataset):
        self._device = MeasuredLatency(study, dataset)
        self._predictor = PredictedLatency(study, dataset)
        self.key = self._device.key  # a measurement replaces the prediction stored under the same device
        self.identity = self._device.identity  # the device's: a study keeps to it
        self.margin = DEFAULT_MARGIN if study.device.margin is None else study.device.margin
        self.measure_every = study.device.measure == "every"
        self.limit_ms = study.constraints.max_latency_ms

    def latency(self, arch: Arch) -> Latency:
        """The prediction (cheap), stored under the device's key and marked as predicted."""
        predicted = self._predictor.latency(arch)
        return Latency(arch_key=arch.key, device_key=self.key, source="predicted", median_ms=predicted.median_ms,
                       detail={"predictor": self._predictor.key, "margin": self.margin})

    def undecided(self, latency: Latency) -> bool:
        """Whether a figure is a prediction the device must settle before the candidate is rejected or trained."""
        if latency.source != "predicted":
            return False
        if self.measure_every:
            return not self._surely_too_slow(latency)
        return not (self._surely_fast(latency) or self._surely_too_slow(latency))

    def rank(self, latency: Latency) -> float:
        """A candidate's place among those a strategy ranks equally: 0 when its figure settles it, else its
        predicted share of the limit, so the device measures the likeliest to pass first and only when
        the settled ones are spent. With ``measure = "every"`` every proposal is measured: all rank 0.
        """
        if self.measure_every or not self.undecided(latency):
            return 0.0
        return latency.median_ms / self.limit_ms  # undecided: there is a limit

    def _surely_fast(self, latency: Latency) -> bool:
        return self.limit_ms is None or latency.median_ms * (1 + self.margin) <= self.limit_ms

    def _surely_too_slow(self, latency: Latency) -> bool:
        return self.limit_ms is not None and latency.median_ms * (1 - self.margin) > self.limit_ms

    def measure(self, arch: Arch) -> Latency:
        """Time the candidate on the device (about a second)."""
        return self._device.latency(arch)


def make_latency_source(study: Study, dataset: Dataset):
    """The study's source; :func:`iotnas.study.parse_study` has refused kinds train mode cannot time."""
    if study.device.kind == "predictor":
        return PredictedLatency(study, dataset)
    if study.device.hybrid:
        return HybridLatency(study, dataset)
    return MeasuredLatency(study, dataset)


__all__ = ["DEFAULT_MARGIN", "HybridLatency", "MeasuredLatency", "PredictedLatency", "make_latency_source"]
