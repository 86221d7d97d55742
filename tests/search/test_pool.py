"""The pool stage: every drawn candidate is costed and classified; a draw that cannot run is counted, not fatal."""

from iotnas.search import open_store, prepare_search
from iotnas.store import INVALID, POOLED
from iotnas.study import parse_study


def test_a_draw_that_cannot_run_is_counted_and_the_stage_goes_on(tmp_path):
    # densenet/s2/41 draws a transition with 0 output channels; the released set skips such ids too.
    study = parse_study({"name": "pool", "store": str(tmp_path / "pool.db"),
                         "space": {"laws": ["densenet/s2"], "pool_per_law": 42}, "budget": {"candidates": 42}})
    for _ in range(2):  # and again, resuming
        prepare_search(study)
    with open_store(study) as store:
        candidates = {c.key: c for c in store.candidates()}
    assert len(candidates) == 42
    assert candidates["densenet/s2/41"].status == INVALID
    assert "cannot run" in candidates["densenet/s2/41"].reason
    assert sum(c.status == POOLED for c in candidates.values()) == 41
