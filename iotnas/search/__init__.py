"""The constrained search: build a study's components, run its workflow, read its store."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from iotnas.cost import cost
from iotnas.errors import ConfigError
from iotnas.results.winners import SearchSummary, summarize
from iotnas.search.components import Components, Evaluation
from iotnas.search.pool import draw_open_pool, resolve_laws
from iotnas.search.workflow import Callback, SearchEvent, Workflow
from iotnas.store import Store, normalize_url
from iotnas.study import Study, load_study

if TYPE_CHECKING:
    from iotnas.data import Dataset


def build_components(study: Study, *, dataset: Dataset | None = None) -> Components:
    """The pool, evaluator and latency source a study asks for.

    ``dataset``: the study's dataset as already loaded (say, shared by the launcher of local
    workers); default: loaded here.

    Raises:
        ConfigError, DataError, LatencyError: the study names something that cannot be used.
    """
    if study.mode == "tabular":
        from iotnas.search.tabular import ReleasedLatency, ReleasedSet, TabularOracle

        released = ReleasedSet.load(study.resolve(study.released) if study.released else None)
        wanted = {(ref.space, ref.law) for ref in resolve_laws(study)}  # the released models' geometry
        pool = [a for a in released.archs() if (a.space, a.law) in wanted][: study.budget.candidates]
        return Components(pool=pool, evaluator=TabularOracle(released), latency=ReleasedLatency(released),
                          num_classes=10)  # the released models are CIFAR-10 classifiers
    from iotnas.precision.runner import PrecisionRunner
    from iotnas.search.latency_sources import make_latency_source
    from iotnas.search.training import TrainingEvaluator, load_study_dataset

    dataset = dataset if dataset is not None else load_study_dataset(study)
    geometry = {"num_classes": dataset.num_classes, "in_channels": dataset.in_channels}
    laws = resolve_laws(study, **geometry)
    pool = draw_open_pool(laws, per_law=study.pool_per_law, total=study.budget.candidates)
    return Components(pool=pool, evaluator=TrainingEvaluator(study, dataset),
                      latency=make_latency_source(study, dataset), precision=PrecisionRunner(study, dataset),
                      cost=functools.partial(cost, **geometry),  # the dataset's channels and classes
                      num_classes=dataset.num_classes, device=functools.partial(_device_budget, **geometry))


def _device_budget(arch, format_name: str, *, num_classes: int, in_channels: int):
    """:func:`iotnas.export.c.arch_device_budget`, imported on use (the export is slow to import)."""
    from iotnas.export.c import arch_device_budget

    return arch_device_budget(arch, format_name, num_classes=num_classes, in_channels=in_channels)


def store_location(study: Study, store_url: str | None = None) -> str:
    """The store's SQLAlchemy URL: ``store_url`` (relative to the working directory) or the study's."""
    if store_url is not None:
        return normalize_url(store_url)
    if "://" in study.store:
        return study.store
    return normalize_url(str(study.resolve(study.store)))  # from the study file: relative to the file


@dataclass(frozen=True)
class StoreRef:
    """Where a command reads a study: the store's location and, where known, the study's name."""

    url: str
    study_name: str | None


def locate_store(store_or_study: str, study_name: str | None = None) -> StoreRef:
    """A store as given, or a study file's (``*.toml``) store and study: commands that read a study
    take either, so a user can name the file they ran ``iotnas search`` on.

    Raises:
        ConfigError: a study file that cannot be read.
    """
    path = Path(store_or_study)
    if path.suffix.lower() != ".toml":
        return StoreRef(store_or_study, study_name)
    study = load_study(path)  # a missing or malformed study file: one clear line
    if study_name is not None and study_name != study.name:
        raise ConfigError(f"--study {study_name!r}: {path} is the study {study.name!r}; give its store to read "
                          "another study in it")
    return StoreRef(store_location(study), study.name)


def open_store(study: Study, store_url: str | None = None) -> Store:
    """The study's store (``store_url`` overrides the study file), checked to belong to it."""
    return Store.open(store_location(study, store_url), study=study)


def run_search(
    study: Study, *, store_url: str | None = None, callbacks: Sequence[Callback] = (),
    components: Components | None = None, worker: str | None = None,
) -> SearchSummary:
    """Run (or resume) a study to the end of its budget and return its summary.

    Several calls (processes, machines) may run one study on one store at once; each is a
    worker that claims its own proposals and trainings.
    """
    components = components or build_components(study)
    with open_store(study, store_url) as store:
        return Workflow(study, store, components, callbacks=callbacks, worker=worker).run()


def prepare_search(study: Study, *, store_url: str | None = None, callbacks: Sequence[Callback] = ()) -> None:
    """Only the stages before training (pool, memory check, cheap latency), so workers start from them."""
    with open_store(study, store_url) as store:
        Workflow(study, store, build_components(study), callbacks=callbacks).prepare()


__all__ = [
    "Callback",
    "Components",
    "Evaluation",
    "SearchEvent",
    "SearchSummary",
    "StoreRef",
    "Workflow",
    "build_components",
    "locate_store",
    "open_store",
    "prepare_search",
    "run_search",
    "store_location",
    "summarize",
]
