"""Train mode's latency sources: timing on this machine or a device agent, or a calibrated predictor."""

from __future__ import annotations

from typing import Any

from iotnas.arch import Arch
from iotnas.data import Dataset
from iotnas.store import Latency
from iotnas.study import Study


class MeasuredLatency:
    """Times each candidate when it is proposed, here or on a device agent (not cheap: ~1 s each)."""

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
        from iotnas.latency import measure_latency

        m = measure_latency(arch, runtime=self._device.runtime, threads=self._device.threads,
                            device=self._client, **self._geometry)
        return Latency(arch_key=arch.key, device_key=self.key, source="measured", median_ms=m.median_ms,
                       detail=m.to_dict())


class PredictedLatency:
    """Latency from a predictor calibrated on the device: cheap, so the whole pool is screened first."""

    cheap = True
    identity = None

    def __init__(self, study: Study):
        from iotnas.latency import LatencyPredictor

        self.key = study.device.key
        self._predictor = LatencyPredictor.load(study.resolve(study.device.predictor))

    def latency(self, arch: Arch) -> Latency:
        return Latency(arch_key=arch.key, device_key=self.key, source="predicted",
                       median_ms=float(self._predictor.predict(arch)), detail={})


def make_latency_source(study: Study, dataset: Dataset):
    """The study's source; :func:`iotnas.study.parse_study` has refused kinds train mode cannot time."""
    if study.device.kind == "predictor":
        return PredictedLatency(study)
    return MeasuredLatency(study, dataset)


__all__ = ["MeasuredLatency", "PredictedLatency", "make_latency_source"]
