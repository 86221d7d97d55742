"""Arch: construction, validation, parsing, JSON round trip, stable keys."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from iotnas.arch import Arch, parse_id
from iotnas.errors import ArchError, UnknownLawError, UnknownSpaceError


def test_sampled_arch_key_args_and_alias():
    a = Arch.parse("random_net_mobilenetv2/s4/39")
    assert a == Arch("mobilenetv2", "s4", 39)
    assert a.space == "mobilenetv2" and a.key == "mobilenetv2/s4/39" and str(a) == a.key
    assert a.args["io_planes"] == [20, 84]
    assert a.is_sampled and hash(a) == hash(Arch("mobilenetv2", "s4", 39))


def test_args_is_a_fresh_copy():
    a = Arch("densenet", "s1", 0)
    a.args["nblocks"].append(99)
    assert a.args["nblocks"] == [13, 16, 22, 1]


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Arch("densenet", "s1", 0).id = 3


@pytest.mark.parametrize("arch", [Arch("googlenet", "s3", 0), Arch("probenet", "s0", 2**32 - 1),
                                  Arch.from_args("resnet", {"blocks": [0, 1, 1, 0], "fs": [5, 5, 5, 3, 5], "num_blocks": [2, 1, 1, 2]})])
def test_json_round_trip(arch):
    assert Arch.from_json(arch.to_json()) == arch
    assert Arch.from_json(arch.to_json()).key == arch.key
    assert Arch.parse(arch.to_json()) == arch


def test_explicit_args_key_is_a_short_hash_of_canonical_json():
    args = {"fs": [6, 7, 2], "ks": [3, 3, 5, 1, 5, 1]}
    a = Arch.from_args("random_net_probenet_s", args)
    b = Arch.from_args("probenet", dict(reversed(list(args.items()))))  # key order does not matter
    assert a == b and a.key == b.key
    assert a.key.startswith("probenet/args/") and len(a.key.split("/")[-1]) == 16
    assert a.key == "probenet/args/" + __import__("hashlib").sha256(
        b'{"fs":[6,7,2],"ks":[3,3,5,1,5,1]}').hexdigest()[:16]
    assert a.args == args and not a.is_sampled
    assert Arch.from_args("probenet", {"fs": [6, 7, 3], "ks": [3, 3, 5, 1, 5, 1]}).key != a.key


def test_numpy_integer_ids_are_accepted_as_plain_ints():
    a = Arch("resnext", "s1", np.int64(3))
    assert type(a.id) is int and a.key == "resnext/s1/3"


def test_unknown_space_lists_known():
    with pytest.raises(UnknownSpaceError, match="densenet.*probenet"):
        Arch("vgg16", "s1", 0)


def test_unknown_law_lists_laws():
    with pytest.raises(UnknownLawError, match="s1, s2, s3"):
        Arch("pnasnet", "s4", 0)


@pytest.mark.parametrize("bad", [-1, 2**32, 1.5, 3.0, "3", True, None])
def test_bad_ids(bad):
    with pytest.raises(ArchError):
        Arch("densenet", "s1", bad)


@pytest.mark.parametrize("text", ["-1", "1.5", "abc", "", "4294967296", "٣"])
def test_bad_id_text(text):
    with pytest.raises(ArchError):
        parse_id(text)


@pytest.mark.parametrize("text", ["densenet/s1", "densenet/s1/0/1", "densenet", "densenet/args/abc"])
def test_bad_arch_strings(text):
    with pytest.raises(ArchError):
        Arch.parse(text)


@pytest.mark.parametrize("text", ["{", "[1,2]", '{"space":"densenet"}', '{"space":"densenet","law":"s1","id":0,"x":1}',
                                  '{"space":"densenet","law":"s1","id":-3}', "null"])
def test_malformed_json(text):
    with pytest.raises(ArchError):
        Arch.from_json(text)


@pytest.mark.parametrize("args", [
    {"fs": [6, 7], "ks": [3, 3, 5, 1, 5, 1]},
    {"fs": [6, 7, 2], "ks": [3, 3, 5, 1, 5, 2]},
    {"fs": [6, 7, 2], "ks": [3, 3, 5, 1, 5, 1], "extra": 1},
    {"fs": [6, 7, True], "ks": [3, 3, 5, 1, 5, 1]},
    [1, 2, 3],
])
def test_malformed_explicit_args(args):
    with pytest.raises(ArchError):
        Arch.from_args("probenet", args)


def test_explicit_mobilenet_needs_three_stride_two_stages():
    args = Arch("mobilenetv2", "s6", 10).args
    args["cfg"][0][3] = 1
    with pytest.raises(ArchError, match="stride 2"):
        Arch.from_args("mobilenetv2", args)


def test_law_and_args_are_exclusive():
    with pytest.raises(ArchError):
        Arch("probenet", "s1", 0, args_json='{"fs":[1,1,1],"ks":[1,1,1,1,1,1]}')
    with pytest.raises(ArchError):
        Arch("probenet")
