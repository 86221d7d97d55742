"""The constrained search: the workflow, its components, and the tabular mode."""

from __future__ import annotations

from typing import Sequence

from iotnas.search.summary import ModelResult, SearchSummary, summarize
from iotnas.search.workflow import Callback, Components, SearchEvent, Workflow
from iotnas.store import Store, normalize_url
from iotnas.study import Study


def store_location(study: Study, store_url: str | None = None) -> str:
    """The store's SQLAlchemy URL: ``store_url`` (relative to the working directory) or the study's."""
    if store_url is not None:
        return normalize_url(store_url)
    if "://" in study.store:
        return study.store
    return normalize_url(str(study.resolve(study.store)))  # from the study file: relative to the file


def open_store(study: Study, store_url: str | None = None) -> Store:
    """The study's store (``store_url`` overrides the study file), checked to belong to it."""
    return Store.open(store_location(study, store_url), study_name=study.name, fingerprint=study.fingerprint)


def run_search(
    study: Study, *, store_url: str | None = None, callbacks: Sequence[Callback] = (),
    components: Components | None = None, worker: str | None = None,
) -> SearchSummary:
    """Run (or resume) a study to the end of its budget and return its summary.

    Several calls (processes, machines) may run one study on one store at once; each is a
    worker that claims its own proposals and trainings.
    """
    from iotnas.search.components import build_components

    components = components or build_components(study)
    with open_store(study, store_url) as store:
        return Workflow(study, store, components, callbacks=callbacks, worker=worker).run()


def prepare_search(study: Study, *, store_url: str | None = None, callbacks: Sequence[Callback] = ()) -> None:
    """Only the stages before training (pool, memory check, cheap latency), so workers start from them."""
    from iotnas.search.components import build_components

    with open_store(study, store_url) as store:
        Workflow(study, store, build_components(study), callbacks=callbacks).prepare()


__all__ = [
    "Callback", "Components", "ModelResult", "SearchEvent", "SearchSummary", "Workflow",
    "open_store", "prepare_search", "run_search", "store_location", "summarize",
]
