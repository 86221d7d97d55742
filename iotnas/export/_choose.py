"""What ``export`` exports when asked for less than everything: the study's winner, in the format it chose,
and why a model should not be exported (over the study's limits, at chance level)."""

from __future__ import annotations

from dataclasses import dataclass

from iotnas.arch import Arch
from iotnas.errors import ArchError, ConfigError, ExportError
from iotnas.formats import parse_format
from iotnas.results import is_chance_level
from iotnas.results.limits import Limits, Measured
from iotnas.results.points import ModelPoint, study_points
from iotnas.results.winners import winners
from iotnas.store import Store

FLOAT32 = "float32"


@dataclass(frozen=True, slots=True)
class Choice:
    """The model and format to export, and the study's figures for that pair when it has them."""

    key: str
    format_name: str
    point: ModelPoint | None  # None: the study never evaluated the model in this format
    limits: Limits


def choose(store: Store, model_key: str | None, format_name: str | None) -> Choice:
    """``model_key`` (default: the study's winner) in ``format_name`` (default: the format the study chose for it).

    A model the precision stage never evaluated has float32 as its chosen format.

    Raises:
        ExportError: a malformed key, or no key and no feasible model to choose.  FormatError: unknown format.
    """
    study = store.study()
    limits = study.constraints if study is not None else Limits()
    points = study_points(store, limits=limits)
    best = winners(points)
    if model_key is None:
        if not best:
            raise ExportError(f"store {store.url} has no trained model within the study's limits to export; give a "
                              "model KEY (see 'iotnas status') and --force to export one all the same")
        key = best[0].key
    else:
        try:
            key = Arch.parse(model_key).key
        except (ArchError, ConfigError) as exc:
            raise ExportError(f"{model_key!r} is not a model key ({exc}); give one like mobilenetv2/s4/39") from None
    if format_name is None:
        format_name = next((p.format_name for p in best if p.key == key), FLOAT32)
    name = parse_format(format_name).name
    point = next((p for p in points if p.key == key and parse_format(p.format_name).name == name), None)
    return Choice(key=key, format_name=name, point=point, limits=limits)


def refusals(choice: Choice, *, weight_bytes: int, peak_activation_bytes: int | None, num_classes: int) -> tuple[str, ...]:
    """Why the chosen pair should not be deployed: each broken limit, and chance level (empty: none).

    ``weight_bytes`` is the promised figure (the study's count in the format), measured at export
    so that a format the study never evaluated is judged too.
    """
    point = choice.point
    figures = Measured(weight_bytes=weight_bytes, latency_ms=point.latency_ms if point else None,
                       peak_activation_bytes=peak_activation_bytes)
    found = [f"over the study's limits ({v})" for v in choice.limits.violations(figures)]
    if point is not None and is_chance_level(point.accuracy, num_classes):
        found.append(f"at chance level ({point.accuracy:.1%} on {num_classes} classes)")
    return tuple(found)


__all__ = ["Choice", "choose", "refusals"]
