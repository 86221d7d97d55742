"""The pool stage: every drawn candidate is costed and classified; a draw that cannot run is counted, not fatal."""

import json
import os
import shutil

import pytest

from iotnas.arch import Arch
from iotnas.cost import cost
from iotnas.errors import ConfigError, SearchError
from iotnas.export.c import arch_device_budget
from iotnas.results.limits import Limits
from iotnas.search import open_store, prepare_search, run_search
from iotnas.search.pool import expand_laws, resolve_laws
from iotnas.spaces.yields import law_yield
from iotnas.store import INVALID, POOLED, REJECTED_FLASH
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


@pytest.fixture
def arm_toolchain():
    """Skip when the Arm toolchain is missing here; fail in CI, which installs it (.ci/run)."""
    missing = [t for t in ("arm-none-eabi-gcc", "arm-none-eabi-size") if shutil.which(t) is None]
    if missing:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"{', '.join(missing)} not installed")


def _device_study(tmp_path, **limits):
    """Six small ProbeNets on the 1-channel digits, stored in e4m3 (weights decoded by table in C)."""
    return parse_study({"name": "device", "store": str(tmp_path / "device.db"), "formats": ["e4m3"],
                        "constraints": limits, "space": {"laws": ["probenet/s2"], "pool_per_law": 6},
                        "budget": {"candidates": 6, "trainings": 2, "epochs": [1]}})


def test_flash_limit_rejects_what_does_not_fit_and_keeps_the_figures(tmp_path, arm_toolchain, monkeypatch):
    """The limit is the flash of the median-sized candidate, measured the export's way: the larger
    ones are rejected and never trained, the figures stay in the store, and the search resumed
    from the pool builds nothing again (here it could not: the toolchain is gone)."""
    archs = [Arch("probenet", "s2", i) for i in range(6)]
    median = sorted(archs, key=lambda a: cost(a, in_channels=1).n_values)[2]
    limit = arch_device_budget(median, "e4m3", in_channels=1).flash_bytes
    study = _device_study(tmp_path, max_flash_bytes=limit)
    prepare_search(study)
    with open_store(study) as store:
        candidates = {c.key: c for c in store.candidates()}
        prefix = "device_budget/cortex-m4/"  # then format/model
        figures = {k[len(prefix):]: json.loads(v) for k, v in store.meta().items() if k.startswith(prefix)}
    assert set(figures) == {f"e4m3/{a.key}" for a in archs}
    assert figures[f"e4m3/{median.key}"]["flash_bytes"] == limit  # the same build as the export's
    for arch in archs:
        flash = figures[f"e4m3/{arch.key}"]["flash_bytes"]
        status = candidates[arch.key].status
        assert status == (REJECTED_FLASH if flash > limit else POOLED), arch.key
    rejected = [c for c in candidates.values() if c.status == REJECTED_FLASH]
    assert rejected and candidates[median.key].status == POOLED
    assert all("flash bytes >" in c.reason and "Cortex-M4, e4m3" in c.reason for c in rejected)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    run_search(study)  # resumes: every candidate is known, nothing is built again
    with open_store(study) as store:
        trained = {t.arch_key for t in store.trainings(status="done")}
        after = {c.key: c.status for c in store.candidates()}
    assert len(trained) == 2 and not trained & {c.key for c in rejected}
    assert {k for k, status in after.items() if status == REJECTED_FLASH} == {c.key for c in rejected}


def test_device_limit_without_the_toolchain_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    study = _device_study(tmp_path, max_ram_bytes=64 * 1024)
    with pytest.raises(SearchError, match=r"max_ram_bytes needs the Arm toolchain: arm-none-eabi-gcc is not "
                                          r"installed; install it with: apt-get install gcc-arm-none-eabi"):
        prepare_search(study)
    with open_store(study) as store:
        assert store.candidates() == []  # nothing costed, nothing half-stored


def test_device_limits_are_study_keys_that_keep_old_fingerprints():
    base = {"name": "s"}
    assert parse_study(base).fingerprint == parse_study({**base, "constraints": {}}).fingerprint
    limited = parse_study({**base, "constraints": {"max_flash_bytes": 65536, "max_ram_bytes": 32768}})
    assert limited.constraints.max_flash_bytes == 65536 and limited.constraints.max_ram_bytes == 32768
    assert limited.fingerprint != parse_study(base).fingerprint
    with pytest.raises(ConfigError, match="constraints.max_flash_bytes"):
        parse_study({**base, "constraints": {"max_flash_bytes": 0}})
