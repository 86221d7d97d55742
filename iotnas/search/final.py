"""Which models the final stage trains on: chosen from the formats' scores at the last rung."""

from __future__ import annotations

from iotnas.formats import parse_format
from iotnas.results.chance import is_chance_level
from iotnas.results.points import ModelPoint, study_points
from iotnas.store import Store
from iotnas.study import Study

#: The family of a format the study did not list: one chosen by the (e, m) grid for its model.
PER_MODEL_FORMAT = "per-model format"


def format_family(point: ModelPoint, study: Study) -> str:
    """A column of the headline table: a format the study lists (float32, half, int8...), or the grid's."""
    listed = {parse_format(name).name for name in study.formats}
    return point.format_name if point.format_name in listed else PER_MODEL_FORMAT


def final_models(store: Store, study: Study, *, num_classes: int | None) -> list[str]:
    """The keys of the models to train on, most accurate first.

    Read from the results at the last rung of successive halving only (never from the final
    trainings themselves), so the choice is the same before, during and after the final stage.
    ``[final] top = 0`` takes the most accurate feasible model of each format family (float32,
    each listed format, and the grid's per-model formats); ``top = N`` the N models with the
    most accurate feasible format. Chance-level results never qualify.
    """
    rung = study.budget.epochs[-1]
    points = [p for p in study_points(store, limits=study.constraints, finetuned=False, epochs=rung)
              if p.feasible and not is_chance_level(p.accuracy, num_classes)]
    if any(p.from_precision for p in points):  # once formats were scored, their figures rank
        points = [p for p in points if p.from_precision]
    ranked = sorted(points, key=lambda p: (-p.accuracy, p.weight_bytes, p.key, p.format_name))
    chosen: list[str] = []
    if study.final.top > 0:
        for p in ranked:
            if p.key not in chosen:
                chosen.append(p.key)
        return chosen[: study.final.top]
    families: set[str] = set()
    for p in ranked:
        family = format_family(p, study)
        if family not in families:
            families.add(family)
            if p.key not in chosen:
                chosen.append(p.key)
    return chosen
