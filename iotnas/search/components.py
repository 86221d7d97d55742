"""Turn a study into the pieces the workflow runs: pool, evaluator, latency source."""

from __future__ import annotations

import functools

from iotnas.cost import cost
from iotnas.search.pool import draw_open_pool, expand_laws
from iotnas.search.workflow import Components
from iotnas.study import Study


def build_components(study: Study) -> Components:
    """The pool, evaluator and latency source a study asks for.

    Raises:
        ConfigError, DataError, LatencyError: the study names something that cannot be used.
    """
    laws = expand_laws(study.laws)
    if study.mode == "tabular":
        from iotnas.search.tabular import ReleasedLatency, ReleasedSet, TabularOracle

        released = ReleasedSet.load(study.resolve(study.released) if study.released else None)
        wanted = {(ref.space, ref.law) for ref in laws}
        pool = [a for a in released.archs() if (a.space, a.law) in wanted][: study.budget.candidates]
        return Components(pool=pool, evaluator=TabularOracle(released), latency=ReleasedLatency(released))
    from iotnas.search.training import PrecisionRunner, TrainingEvaluator, load_study_dataset, make_latency_source

    dataset = load_study_dataset(study)
    pool = draw_open_pool(laws, per_law=study.pool_per_law, total=study.budget.candidates)
    geometry = {"num_classes": dataset.num_classes, "in_channels": dataset.in_channels}
    return Components(pool=pool, evaluator=TrainingEvaluator(study, dataset),
                      latency=make_latency_source(study, dataset), precision=PrecisionRunner(study, dataset),
                      cost=functools.partial(cost, **geometry))  # the dataset's channels and classes
