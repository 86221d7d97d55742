"""The registry: names, aliases, laws, duplicate refusal, clear errors."""

from __future__ import annotations

import pytest

from iotnas.errors import ArchError, UnknownLawError, UnknownSpaceError
from iotnas.spaces import Space, get_space, list_spaces, register_space

SPACES = ["densenet", "googlenet", "mobilenetv2", "pnasnet", "resnext", "resnet", "probenet", "compact"]
LAWS = {
    "densenet": ["s1", "s2", "s3"],
    "googlenet": ["s1", "s2", "s3", "s4", "s5", "s6"],
    "mobilenetv2": ["s1", "s2", "s3", "s4", "s5", "s6"],
    "pnasnet": ["s1", "s2", "s3"],
    "resnext": ["s1", "s2", "s3"],
    "resnet": ["s1", "s2", "s3", "s4", "s5"],
    "probenet": ["s0", "s1", "s2", "s3"],
    "compact": ["s1", "s2", "s3", "s4", "s5", "s6", "r2", "r3", "r4", "r5"],
}
PAPER_SPACES = SPACES[:-1]


def test_space_names_and_laws():
    assert list_spaces() == SPACES
    for name in SPACES:
        assert list(get_space(name).laws) == LAWS[name]


@pytest.mark.parametrize("name", PAPER_SPACES)
def test_released_names_are_aliases(name):
    space = get_space(name)
    expected = "random_net_probenet_s" if name == "probenet" else f"random_net_{name}"
    assert space.released_name == expected
    assert get_space(expected) is space


def test_unknown_space_lists_known_names():
    with pytest.raises(UnknownSpaceError) as e:
        get_space("vgg")
    assert "'vgg'" in str(e.value)
    for name in SPACES:
        assert name in str(e.value)


def test_unknown_law_lists_the_space_laws():
    with pytest.raises(UnknownLawError) as e:
        get_space("densenet").sample("s4", 0)
    assert "s4" in str(e.value) and "s1, s2, s3" in str(e.value)


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="already registered"):

        @register_space("resnet2", aliases=("random_net_densenet",))
        class Dup(Space):  # pragma: no cover - never registered
            pass

    assert "resnet2" not in list_spaces()


def test_every_law_describes_its_ranges():
    ranges = get_space("densenet").law("s1").ranges()
    assert ranges == {"nblocks": "[1, 32)", "growth_rate": "[1, 32)", "reduction_percent": "[20, 80)"}
    assert get_space("probenet").law("s2").ranges()["ks"] == "{1, 3, 5}"
    for name in SPACES:
        for law in get_space(name).laws.values():
            assert law.ranges()


@pytest.mark.parametrize("bad", [-1, 2**32, 0.5, True])
def test_sample_refuses_bad_ids(bad):
    with pytest.raises(ArchError):
        get_space("probenet").sample("s1", bad)
