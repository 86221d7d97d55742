"""Law yields: the shipped table is current and equals a fresh costing; a changed law is costed again."""

from __future__ import annotations

import json

import pytest

from iotnas.arch import Arch
from iotnas.cost import cost
from iotnas.results.limits import Limits
from iotnas.spaces import get_space, list_spaces
from iotnas.spaces import yields as yields_module
from iotnas.spaces.yields import (
    SHIPPED_GEOMETRIES,
    YIELD_IDS,
    LawYield,
    fingerprint,
    law_yield,
)


def _shipped() -> dict:
    return json.loads(yields_module.TABLE_PATH.read_text(encoding="utf-8"))


def test_shipped_table_covers_every_law_with_its_current_fingerprint():
    """Fails when a space changes without the table being rewritten (yields.write_table())."""
    table = _shipped()
    assert table["ids"] == YIELD_IDS
    for channels, classes in SHIPPED_GEOMETRIES:
        laws = table["geometries"][f"{channels}x32x32->{classes}"]
        for name in list_spaces():
            for law in get_space(name).laws:
                entry = laws[f"{name}/{law}"]
                assert entry["fingerprint"] == fingerprint(name, law), f"{name}/{law}: rewrite law_yields.json"
                assert len(entry["figures"]) == YIELD_IDS


@pytest.mark.parametrize(("space", "law"), [("compact", "s6"), ("probenet", "s2"), ("densenet", "s2")])
@pytest.mark.parametrize(("channels", "classes"), SHIPPED_GEOMETRIES)
def test_shipped_figures_equal_a_fresh_costing(space, law, channels, classes):
    shipped = law_yield(space, law, in_channels=channels, num_classes=classes)
    for id, figures in enumerate(shipped.figures):
        arch = Arch(space, law, id)
        if figures is None:  # densenet/s2/41 draws a transition with 0 channels
            assert (space, law, id) == ("densenet", "s2", 41)
            continue
        c = cost(arch, in_channels=channels, num_classes=classes)
        assert figures == (c.n_values, c.peak_activation_values), arch.key


def test_a_changed_law_is_costed_again_not_read_stale(tmp_path, monkeypatch):
    table = _shipped()
    laws = table["geometries"]["3x32x32->10"]
    laws["compact/s6"]["fingerprint"] = "0" * 16  # as if the space had changed since the table was written
    laws["compact/s6"]["figures"] = [[1, 1]] * YIELD_IDS
    laws["compact/s5"]["figures"] = [[2, 2]] * YIELD_IDS  # unchanged fingerprint: read from the table
    path = tmp_path / "law_yields.json"
    path.write_text(json.dumps(table), encoding="utf-8")
    monkeypatch.setattr(yields_module, "TABLE_PATH", path)
    yields_module._table.cache_clear()
    try:
        assert law_yield("compact", "s6").figures[0] == (cost(Arch("compact", "s6", 0)).n_values,
                                                           cost(Arch("compact", "s6", 0)).peak_activation_values)
        assert law_yield("compact", "s5").figures == ((2, 2),) * YIELD_IDS
    finally:
        yields_module._table.cache_clear()


def test_summary_and_counts_under_limits():
    y = LawYield("x", "s1", ((100, 10), None, (300, 2_000), (200, 10)))
    assert y.values_summary() == (100, 200, 300) and y.n_values == [100, 200, 300]
    assert y.count_within(Limits(max_weight_bytes=800), bits=32) == 2  # 400 and 800 bytes fit, 1,200 do not
    assert y.count_within(Limits(max_weight_bytes=800), bits=8) == 3
    assert y.count_within(Limits(max_weight_bytes=800, max_activation_bytes=4_000), bits=8) == 2  # 8,000 B peak
    assert y.count_within(Limits(), bits=32) == 3  # the id that cannot run never counts
    assert LawYield("x", "s1", (None,)).values_summary() is None
