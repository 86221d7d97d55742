"""The deployed weights: BatchNorm folded before rounding, fewer bytes than promised, values the format holds."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from iotnas.arch import Arch
from iotnas.export import ChannelAffine, deploy, fold_batchnorm
from iotnas.formats import parse_format, storage_bytes
from iotnas.spaces import build

#: The smallest architecture of each space among a few sampled: every family's layer patterns.
SMALL = ["mobilenetv2/s6/3", "densenet/s3/3", "resnet/s5/2", "resnext/s3/1", "googlenet/s6/3", "pnasnet/s3/0",
         "probenet/s2/3"]


def _model(key: str) -> nn.Module:
    """A model with BatchNorm statistics far from the identity, so a wrong fold shows."""
    torch.manual_seed(0)
    model = build(Arch.parse(key), num_classes=10, in_channels=3).eval()
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=gen) - 0.5)
    return model


@pytest.mark.parametrize("key", SMALL)
def test_folding_keeps_the_function_and_removes_every_batchnorm(key):
    model = _model(key)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected, got = model(x), folded(x)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the trained model is untouched


@pytest.mark.parametrize("key", SMALL)
@pytest.mark.parametrize("fmt", ["e4m3", "int8", "e2m1fn", "float16"])
def test_deployed_bytes_never_exceed_the_promise_and_values_are_the_formats(key, fmt):
    model = _model(key)
    d = deploy(model, fmt)
    f = parse_format(fmt)
    assert d.promised_bytes == storage_bytes(f, model)
    assert d.weight_bytes <= d.promised_bytes
    assert d.n_values < sum(t.numel() for t in model.state_dict().values())
    state = d.module.state_dict()
    assert list(state) == list(d.tensors)
    for name, t in d.tensors.items():
        assert torch.equal(state[name], t.values)
        assert torch.equal(f.round(t.values), t.values)  # already in the format: rounding again changes nothing
        assert torch.equal(f.decode(t.encoded).reshape(t.shape), t.values)


def test_densenet_preactivation_batchnorm_stays_a_channel_affine():
    model = _model("densenet/s3/3")
    folded = fold_batchnorm(model)
    affines = [m for m in folded.modules() if isinstance(m, ChannelAffine)]
    assert affines  # BatchNorm → ReLU → convolution: nothing to fold into
    assert all(m.scale.shape == m.shift.shape and m.scale.dim() == 1 for m in affines)


def test_the_first_convolution_is_folded_then_rounded():
    """An independent fold of MobileNetV2's stem: w * gamma / sqrt(var + eps), bias beta - mean * that; then rounding."""
    model = _model("mobilenetv2/s6/3")
    conv, bn = model.conv1, model.bn1
    factor = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
    weight = conv.weight.detach() * factor.view(-1, 1, 1, 1)
    bias = (bn.bias - bn.running_mean * factor).detach()
    folded = fold_batchnorm(model)
    assert torch.allclose(folded.conv1.weight, weight, rtol=1e-6, atol=0)
    assert torch.allclose(folded.conv1.bias, bias, rtol=1e-6, atol=1e-7)
    fmt = parse_format("e4m3")
    d = deploy(model, fmt)
    assert torch.equal(d.tensors["conv1.weight"].values, fmt.round(folded.conv1.weight.detach()))
    assert torch.equal(d.tensors["conv1.bias"].values, fmt.round(folded.conv1.bias.detach()))
