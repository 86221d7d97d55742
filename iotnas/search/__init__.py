"""The constrained search: the workflow, its components, and the tabular mode."""

from __future__ import annotations

from typing import Sequence

from iotnas.search.workflow import (
    Callback,
    Components,
    ModelResult,
    SearchEvent,
    SearchSummary,
    Workflow,
    summarize,
)
from iotnas.store import Store
from iotnas.study import Study


def open_store(study: Study, store_url: str | None = None) -> Store:
    """The study's store (``store_url`` overrides the study file), checked to belong to it."""
    if store_url is not None:
        location = store_url  # from the command line: relative to the working directory
    elif "://" in study.store:
        location = study.store
    else:
        location = str(study.resolve(study.store))  # from the study file: relative to the file
    return Store.open(location, study_name=study.name, fingerprint=study.fingerprint)


def run_search(
    study: Study, *, store_url: str | None = None, callbacks: Sequence[Callback] = (),
    components: Components | None = None,
) -> SearchSummary:
    """Run (or resume) a study to the end of its budget and return its summary."""
    from iotnas.search.components import build_components

    components = components or build_components(study)
    with open_store(study, store_url) as store:
        return Workflow(study, store, components, callbacks=callbacks).run()


__all__ = [
    "Callback", "Components", "ModelResult", "SearchEvent", "SearchSummary", "Workflow",
    "open_store", "run_search", "summarize",
]
