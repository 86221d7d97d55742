"""Emulation: stored numbers in a format, activations rounded, exact restore."""

from __future__ import annotations

import copy

import pytest
import torch

from iotnas.precision.emulate import emulated, ste_round
from iotnas.errors import FormatError
from iotnas.formats import IntFormat, parse_format
from iotnas.spaces import build


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = build("mobilenetv2/s4/39")
    m.train()
    with torch.no_grad():  # give BatchNorm non-trivial running statistics
        for _ in range(3):
            m(torch.randn(8, 3, 32, 32))
    return m.eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _bits(t):
    return t.view(torch.int32) if t.dtype == torch.float32 else t


@pytest.mark.parametrize("name", ["e4m3", "bfloat16", "e2m1fn", "int8", "int4"])
def test_weights_rounded_inside_and_restored_exactly(model, images, name):
    fmt = parse_format(name)
    before = _state(model)
    ptrs = {k: v.data_ptr() for k, v in model.state_dict().items()}
    with emulated(model, weights=fmt) as m:
        assert m is model
        inside = model.state_dict()
        for key, value in before.items():
            if value.is_floating_point():
                assert torch.equal(_bits(inside[key]), _bits(fmt.round(value))), key
        assert any("running_var" in k for k in inside)
        assert {k: v.data_ptr() for k, v in inside.items()} == ptrs  # same storage: nothing rebuilt
    after = model.state_dict()
    for key, value in before.items():
        assert torch.equal(_bits(after[key]), _bits(value)), key


def test_output_matches_a_copy_with_rounded_weights(model, images):
    fmt = parse_format("e3m4")
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for t in [*reference.parameters(), *reference.buffers()]:
            if t.is_floating_point():
                t.copy_(fmt.round(t))
        expected = reference(images)
        with emulated(model, weights=fmt):
            got = model(images)
        plain = model(images)
    assert torch.equal(got, expected)
    assert not torch.equal(got, plain)


def test_float32_format_changes_nothing(model, images):
    with torch.no_grad():
        plain = model(images)
        with emulated(model, weights="float32", activations="float32"):
            same = model(images)
    assert torch.equal(plain, same)


def test_activations_rounded_at_every_module_output(model, images):
    fmt = parse_format("e4m3")
    seen = []
    with emulated(model, weights="half", activations=fmt):
        handles = [
            m.register_forward_hook(lambda _m, _i, out: seen.append(out)) for m in model.modules()
        ]  # registered after emulation's hooks, so they see the rounded outputs
        with torch.no_grad():
            out = model(images)
        for h in handles:
            h.remove()
    assert len(seen) > 50  # every module that runs (an empty shortcut does not)
    for t in seen:
        assert torch.equal(fmt.round(t), t)
    assert torch.equal(fmt.round(out), out)
    with torch.no_grad():
        assert not torch.equal(model(images), out)  # hooks are gone


def test_restored_after_an_exception(model, images):
    before = _state(model)
    with pytest.raises(RuntimeError, match="boom"), emulated(model, weights="e2m1fn", activations="e5m2"):
        raise RuntimeError("boom")
    for key, value in model.state_dict().items():
        assert torch.equal(_bits(value), _bits(before[key]))
    assert all(not m._forward_hooks for m in model.modules())


def test_fewer_bits_cost_accuracy_in_order(model, images):
    """Agreement of the top class with float32 falls as formats narrow (sanity of the wiring)."""
    torch.manual_seed(2)
    x = torch.randn(64, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)

    def error(m):
        with torch.no_grad():
            return float((m(x) - ref).abs().mean())

    errs = {}
    for name in ("bfloat16", "e4m3", "e2m1fn"):
        with emulated(model, weights=name):
            errs[name] = error(model)
    assert 0 < errs["bfloat16"] < errs["e4m3"] < errs["e2m1fn"]


def test_int_activations_refused(model):
    with pytest.raises(FormatError, match="activations must be a float format"):
        with emulated(model, activations=IntFormat(8)):
            pass


def test_ste_round_forward_rounds_backward_passes_gradient():
    x = torch.tensor([0.1, 0.3, -2.7, 100.0], requires_grad=True)
    y = ste_round(x, "e2m1fn")
    assert torch.equal(y.detach(), parse_format("e2m1fn").round(x.detach()))
    (y * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert x.grad.tolist() == [1.0, 2.0, 3.0, 4.0]


def test_activation_rounding_is_differentiable(model, images):
    with emulated(model, weights="bfloat16", activations="e4m3"):
        out = model(images)
        out.sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.zero_grad(set_to_none=True)
