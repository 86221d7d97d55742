"""Every space builds and runs for every law, on 3- and 1-channel 32x32 inputs, with no NaN;
other class counts do not change the arguments; bad sizes and invalid samples are refused."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from iotnas.arch import Arch
from iotnas.cost import cost
from iotnas.errors import ArchError, ConfigError, InputSizeError
from iotnas.spaces import build, get_space, list_spaces


@pytest.fixture(autouse=True)
def _one_thread():
    """Batch-1 forward passes of small nets: OpenMP spinning on a busy 2-core machine costs
    100x more than the arithmetic, so run them single-threaded (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


CASES = [(name, law) for name in list_spaces() for law in get_space(name).laws]
CANDIDATE_IDS = range(5)


def _small_arch(space: str, law: str) -> Arch:
    """The cheapest of the first ids, so large laws (resnet s1) stay quick to run for real."""
    archs = [Arch(space, law, i) for i in CANDIDATE_IDS]
    return min((a for a in archs if _valid(a)), key=lambda a: cost(a).flops)


def _valid(arch: Arch) -> bool:
    try:
        get_space(arch.space).check_args(arch.args)
    except ArchError:
        return False
    return True


@pytest.mark.parametrize(("space", "law"), CASES, ids=[f"{s}-{l}" for s, l in CASES])
def test_forward_every_space_and_law(space, law):
    arch = _small_arch(space, law)
    for in_channels in (3, 1):
        model = build(arch, in_channels=in_channels, seed=0).eval()
        with torch.no_grad():
            out = model(torch.randn(1, in_channels, 32, 32, generator=torch.Generator().manual_seed(1)))
        assert out.shape == (1, 10)
        assert torch.isfinite(out).all(), f"{arch.key} gives non-finite outputs with {in_channels} channel(s)"


def test_class_count_and_channels_change_only_the_ends():
    arch = Arch("mobilenetv2", "s4", 39)
    args = arch.args
    base = build(arch, seed=0).state_dict()
    other = build(arch, num_classes=100, in_channels=1, seed=0).state_dict()
    assert arch.args == args
    assert list(base) == list(other)
    assert other["linear.weight"].shape == (100, 84) and other["conv1.weight"].shape == (20, 1, 3, 3)
    assert base["linear.weight"].shape == (10, 84) and base["conv1.weight"].shape == (20, 3, 3, 3)
    changed = {k for k in base if base[k].shape != other[k].shape}
    assert changed == {"conv1.weight", "linear.weight", "linear.bias"}


def test_spec_state_dict_names():
    sd = build(Arch("pnasnet", "s3", 7)).state_dict()
    assert "layer2.sep_conv1.conv1.weight" in sd and "layer2.conv1.weight" in sd  # bare stride-2 cell
    assert sd["layer2.sep_conv1.conv1.weight"].shape == (14, 1, 7, 7)  # grouped 7x7, groups = in
    g = build(Arch("googlenet", "s3", 0)).state_dict()
    assert list(g)[:3] == ["pre_layers.0.weight", "pre_layers.0.bias", "pre_layers.1.weight"]
    assert "a3.b4.1.weight" in g  # index 0 of b4 is the max-pool
    d = build(Arch("densenet", "s3", 36)).state_dict()
    assert d["linear.weight"].shape == (10, 22)  # channel arithmetic of spec section 14
    assert d["trans1.conv.weight"].shape == (12, 16, 1, 1)


@pytest.mark.parametrize("size", [28, 64, 0])
def test_other_input_sizes_name_the_supported_size(size):
    with pytest.raises(InputSizeError, match="32x32"):
        build(Arch("densenet", "s3", 0), input_size=size)


def test_bad_channel_and_class_counts():
    with pytest.raises(InputSizeError):
        build(Arch("densenet", "s3", 0), in_channels=0)
    with pytest.raises(ConfigError):
        build(Arch("densenet", "s3", 0), num_classes=0)


def test_zero_width_transition_is_refused_not_altered():
    arch = Arch("densenet", "s2", 41)
    assert arch.args == {"nblocks": [1, 4, 13, 3], "growth_rate": 1, "reduction": 0.21}
    with pytest.raises(ArchError, match="0 output channels"):
        build(arch)


def test_float_floor_transition_width():
    """c = 100 with reduction 0.29 gives 28 channels (float floor), not 29 (spec 5.6)."""
    # growth 2: c = 4 + 48*2 = 100 after dense1
    model = build(Arch.from_args("densenet", {"nblocks": [48, 1, 1, 1], "growth_rate": 2, "reduction": 0.29}))
    assert model.trans1.conv.out_channels == 28


_DETERMINISM_SCRIPT = """
import hashlib, json, sys, torch
from iotnas.arch import Arch
from iotnas.spaces import build
out = {}
for key in sys.argv[1:]:
    arch = Arch.parse(key)
    torch.manual_seed(7)
    global_seeded = build(arch)
    h = hashlib.sha256()
    for name, t in build(arch, seed=3).state_dict().items():
        h.update(name.encode()); h.update(t.numpy().tobytes())
    g = hashlib.sha256(b"".join(t.numpy().tobytes() for t in global_seeded.state_dict().values()))
    out[key] = [arch.args, h.hexdigest(), g.hexdigest()]
print(json.dumps(out))
"""


def test_same_arch_and_seed_give_same_args_and_weights_across_processes():
    keys = ["mobilenetv2/s6/10", "googlenet/s3/0", "resnext/s3/35", "probenet/s2/0", "compact/s3/7"]
    procs = [subprocess.Popen([sys.executable, "-c", _DETERMINISM_SCRIPT, *keys], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]  # two fresh interpreters, run side by side
    runs = [json.loads(p.communicate(timeout=300)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert runs[0] == runs[1]
    for key in keys:
        assert runs[0][key][0] == Arch.parse(key).args
    # a different seed gives different weights
    other = build(Arch.parse(keys[0]), seed=4).state_dict()
    same = build(Arch.parse(keys[0]), seed=3).state_dict()
    assert any(not torch.equal(other[k], same[k]) for k in same)


def test_seeded_build_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    build(Arch("probenet", "s2", 0), seed=1)
    assert torch.equal(state, torch.random.get_rng_state())
