"""The pool stage: every drawn candidate is costed and classified; a draw that cannot run is counted, not fatal."""

import pytest

from iotnas.errors import ConfigError
from iotnas.results.limits import Limits
from iotnas.search import open_store, prepare_search
from iotnas.search.pool import expand_laws, resolve_laws
from iotnas.spaces.yields import law_yield
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


def _auto_study(tmp_path, *, formats=("float32",), **limits):
    return parse_study({"name": "auto", "store": str(tmp_path / "auto.db"), "formats": list(formats),
                        "constraints": limits, "space": {"laws": ["auto"], "pool_per_law": 8},
                        "budget": {"candidates": 64}})


def test_auto_picks_the_laws_with_candidates_under_the_limits(tmp_path):
    """At 4 KiB in float32 (1,024 values) only a few laws have a model small enough."""
    picked = {str(r) for r in resolve_laws(_auto_study(tmp_path, max_weight_bytes=4096), in_channels=1)}
    every = {str(r) for r in expand_laws(["all"])}
    assert {"compact/s6", "probenet/s2"} <= picked < every
    assert "compact/s1" not in picked and "mobilenetv2/s4" not in picked
    for key in every:
        space, law = key.split("/")
        fitting = law_yield(space, law, in_channels=1).count_within(Limits(max_weight_bytes=4096), bits=32)
        assert (fitting > 0) == (key in picked), key
    # a narrower allowed format widens the choice; an activation limit narrows it
    with_int8 = {str(r) for r in resolve_laws(_auto_study(tmp_path, formats=("float32", "int8"),
                                                          max_weight_bytes=4096), in_channels=1)}
    assert picked < with_int8 and "compact/s4" in with_int8
    small_maps = {str(r) for r in resolve_laws(_auto_study(tmp_path, formats=("int8",), max_weight_bytes=4096,
                                                           max_activation_bytes=20_000), in_channels=1)}
    assert small_maps and small_maps < with_int8


def test_auto_pool_draws_only_from_the_picked_laws(tmp_path):
    study = _auto_study(tmp_path, max_weight_bytes=4096)  # digits: 1-channel images
    prepare_search(study)
    picked = {str(r) for r in resolve_laws(study, in_channels=1)}
    with open_store(study) as store:
        candidates = store.candidates()
    assert {f"{c.space}/{c.law}" for c in candidates} == picked
    assert all(c.arch_id < 8 for c in candidates)  # pool_per_law
    assert sum(c.status == POOLED for c in candidates) > len(picked)  # the picked laws do have candidates


def test_auto_with_no_law_under_the_limits_says_so(tmp_path):
    with pytest.raises(ConfigError, match=r'"auto": no law .* under the study\'s limits \(64 weight bytes at 32 bits\)'):
        resolve_laws(_auto_study(tmp_path, max_weight_bytes=64))
