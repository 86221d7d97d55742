"""The FLOPs line, ``a * FLOPs + b``: the baseline every other predictor must beat."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from iotnas.errors import LatencyError
from iotnas.latency.predictor._base import PREDICTORS, LatencyPredictor


@PREDICTORS.register("flops")
class FlopsPredictor(LatencyPredictor):
    """``latency_ms = a * FLOPs + b``, least squares on timed networks: the baseline."""

    def __init__(self, *, slope: float, intercept: float, info: Mapping[str, Any]) -> None:
        self.slope, self.intercept, self.info = float(slope), float(intercept), dict(info)

    def predict_flops(self, flops: float) -> float:
        return self.slope * flops + self.intercept

    def predict(self, arch: Any) -> float:
        from iotnas.cost import cost

        shape = self.input_shape  # cost() counts 32x32 images, the only size a network is built for
        return self.predict_flops(cost(arch, in_channels=shape.channels, num_classes=shape.classes).flops)

    @classmethod
    def fit(cls, flops: Sequence[float], measured_ms: Sequence[float], *,
            info: Mapping[str, Any] | None = None) -> FlopsPredictor:
        if len(flops) < 2:
            raise LatencyError("need >= 2 timed networks to fit a FLOPs line")
        slope, intercept = np.polyfit(np.asarray(flops, float), np.asarray(measured_ms, float), 1)
        return cls(slope=slope, intercept=intercept, info={"n_networks": len(flops), **(info or {})})

    def _payload(self) -> dict[str, Any]:
        return {"slope": self.slope, "intercept": self.intercept, "info": self.info}

    @classmethod
    def _from_payload(cls, data: Mapping[str, Any]) -> FlopsPredictor:
        return cls(slope=data["slope"], intercept=data["intercept"], info=data["info"])
