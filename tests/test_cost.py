"""The cost model: byte formula, counting rules checked by hand, peak activations, isolation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from iotnas.arch import Arch
from iotnas.cost import Cost, cost, count, weight_bytes
from iotnas.errors import FormatError


@pytest.mark.parametrize(("n", "bits", "expected"), [(835, 32, 3340), (835, 16, 1670), (835, 5, 522), (1, 1, 1), (0, 8, 0), (7, 3, 3)])
def test_weight_bytes_rounds_up(n, bits, expected):
    assert weight_bytes(n, bits) == expected


@pytest.mark.parametrize("bits", [0, -8, 2.5, True])
def test_weight_bytes_rejects_bad_bits(bits):
    with pytest.raises(FormatError):
        weight_bytes(10, bits)


def test_probenet_counted_by_hand():
    """probenet s2 id 0: fs [6,7,2], ks [3,3,5,1,5,1] (spec section 14)."""
    c = cost(Arch("probenet", "s2", 0))
    conv = 32 * 32 * 9 * 3 * 6 + 16 * 16 * 5 * 6 * 7 + 8 * 8 * 5 * 7 * 2
    linear = 2 * 16 * 10
    bn_elements = 6 * 32 * 32 + 7 * 16 * 16 + 2 * 8 * 8
    pool_inputs = bn_elements  # each max-pool module reads its block's ReLU output
    assert c.n_values == 835
    assert c.macs == conv + linear
    assert c.flops == conv + linear + 2 * bn_elements + pool_inputs
    # live at the first BatchNorm: the image (3*32*32), the conv output and the BN output
    assert c.peak_activation_values == 3 * 1024 + 2 * 6 * 1024
    assert c.peak_activation_bytes(32) == 4 * c.peak_activation_values
    assert c.peak_activation_bytes(12) == (c.peak_activation_values * 12 + 7) // 8
    assert c.weight_bytes(16) == 1670


@pytest.mark.parametrize(("key", "params", "flops"), [
    ("densenet/s3/36", 7654, 2376988),
    ("mobilenetv2/s6/10", 1515, 306386),
    ("googlenet/s3/0", 68495, 32702472),
    ("pnasnet/s3/7", 6292, 2452492),
    ("resnext/s3/35", 4928, 3504976),
])
def test_worked_examples(key, params, flops):
    c = cost(key)
    assert (c.n_values, c.flops) == (params, flops)
    assert c.macs < c.flops


def test_googlenet_flops_include_bias_relu_and_pool_terms():
    """GoogLeNet: flops = MACs + 4 per BN element (BN 2, bias 1, ReLU module 1) + pool-module inputs."""
    arch = Arch("googlenet", "s3", 0)
    rows = arch.args
    hw = [32 * 32] * 2 + [16 * 16] * 5 + [8 * 8] * 2
    out = [r[1] + r[3] + r[5] + r[6] for r in rows]
    bn = rows[0][0] * 1024 + sum((r[1] + r[2] + r[3] + r[4] + 2 * r[5] + r[6]) * a for r, a in zip(rows, hw))
    pools = sum(r[0] * a for r, a in zip(rows, hw)) + out[1] * 1024 + out[6] * 256 + out[8] * 64
    c = cost(arch)
    assert c.flops - c.macs == 4 * bn + pools


def test_one_channel_and_class_count():
    three, one = cost("probenet/s2/0"), cost("probenet/s2/0", in_channels=1)
    assert three.n_values - one.n_values == 2 * 9 * 6  # conv0 loses two input channels
    assert cost("probenet/s2/0", num_classes=100).n_values == 835 + 90 * 2 * 16 + 90


def test_residual_keeps_its_input_alive():
    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(4, 4, 1, bias=False)
            self.b = nn.Conv2d(4, 4, 1, bias=False)

        def forward(self, x):
            return torch.relu(self.b(self.a(x)) + x)

    c = count(Res(), (4, 8, 8))
    assert c.n_values == 32 and c.macs == 2 * 64 * 16 and c.flops == c.macs
    # at the conv b: x, a's output and b's output are live (64*4 values each)
    assert c.peak_activation_values == 3 * 256


def test_inplace_relu_and_views_allocate_nothing():
    m = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(2 * 16, 3))
    c = count(m, (1, 4, 4))
    # at the linear layer: image, conv output (held by the flatten view) and the logits
    assert c.peak_activation_values == 16 + 32 + 3
    assert c.flops == 32 + 32 + 96 and c.macs == 32 + 96


def test_cost_leaves_global_rng_alone_and_is_cached():
    state = torch.random.get_rng_state()
    first = cost(Arch("resnet", "s1", 0))  # 58M values: allocated, never initialised
    assert torch.equal(state, torch.random.get_rng_state())
    assert first.n_values == 58173667 and cost("resnet/s1/0") is first
    assert isinstance(first, Cost)
