"""Codes, packing, storage sizes, integer formats, names and errors."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
import torch

from iotnas.errors import FormatError
from iotnas.formats import (
    Encoded,
    FloatFormat,
    IntFormat,
    format_names,
    pack,
    parse_format,
    storage_bytes,
    unpack,
)


# -- encode / decode ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "dtype", "bits"),
    [
        ("float16", np.float16, 16),
        ("bfloat16", ml_dtypes.bfloat16, 16),
        ("e5m2", ml_dtypes.float8_e5m2, 8),
        ("e4m3", ml_dtypes.float8_e4m3, 8),
        ("e4m3fn", ml_dtypes.float8_e4m3fn, 8),
        ("e3m2fn", ml_dtypes.float6_e3m2fn, 6),
        ("e2m3fn", ml_dtypes.float6_e2m3fn, 6),
        ("e2m1fn", ml_dtypes.float4_e2m1fn, 4),
    ],
)
def test_codes_are_the_bit_patterns_of_ml_dtypes(name, dtype, bits):
    fmt = parse_format(name)
    patterns = np.arange(1 << bits, dtype=np.uint16 if bits == 16 else np.uint8)
    values = patterns.view(dtype).astype(np.float32)
    keep = ~np.isnan(values)
    x = torch.from_numpy(values[keep])
    enc = fmt.encode(x)
    assert np.array_equal(enc.codes.numpy(), patterns[keep].astype(np.int64))
    assert torch.equal(fmt.decode(enc).view(torch.int32), x.view(torch.int32))
    decoded = fmt.decode(Encoded(torch.from_numpy(patterns.astype(np.int64))))
    assert torch.equal(torch.isnan(decoded), torch.from_numpy(~keep))


@pytest.mark.parametrize(("e", "m"), [(1, 2), (4, 0), (5, 10), (3, 7), (8, 23), (6, 17), (2, 23)])
def test_encode_decode_round_trip_random(e, m):
    fmt = FloatFormat(e, m)
    codes = torch.randint(0, 1 << fmt.bits, (4096,), generator=torch.Generator().manual_seed(e * 31 + m))
    values = fmt.decode(Encoded(codes))
    finite = ~torch.isnan(values)
    again = fmt.encode(values[finite]).codes
    assert torch.equal(again, codes[finite])


def test_nan_codes():
    assert FloatFormat(4, 3, finite_only=True).encode(torch.tensor([math.nan])).codes.item() == 0x7F
    assert FloatFormat(5, 2).encode(torch.tensor([math.nan])).codes.item() == 0x7E


def test_encode_refuses_unrepresentable_values():
    with pytest.raises(FormatError, match=r"not representable in e4m3.*nearest: 0.1015625"):
        parse_format("e4m3").encode(torch.tensor([0.5, 0.1]))
    with pytest.raises(FormatError, match="not representable"):
        parse_format("e2m1fn").encode(torch.tensor([math.nan]))
    with pytest.raises(FormatError, match="not representable"):
        parse_format("e4m3fn").encode(torch.tensor([math.inf]))


def test_decode_refuses_out_of_range_codes():
    with pytest.raises(FormatError, match=r"\[0, 2\^8\)"):
        parse_format("e4m3").decode(Encoded(torch.tensor([256])))
    with pytest.raises(FormatError, match="integer tensor"):
        parse_format("e4m3").decode(Encoded(torch.tensor([1.0])))


# -- special values and overflow ----------------------------------------------------------------
def test_overflow_policies():
    x = torch.tensor([1e6, -1e6, math.inf, -math.inf, 250.0, 240.0, 247.9, 248.0])
    ieee = parse_format("e4m3").round(x).tolist()
    assert ieee == [math.inf, -math.inf, math.inf, -math.inf, math.inf, 240.0, 240.0, math.inf]
    sat = parse_format("e4m3-sat").round(x).tolist()
    assert sat == [240.0, -240.0, math.inf, -math.inf, 240.0, 240.0, 240.0, 240.0]
    fn = parse_format("e4m3fn").round(torch.tensor([448.0, 464.0, 464.1, math.inf])).tolist()
    assert fn[:2] == [448.0, 448.0] and all(math.isnan(v) for v in fn[2:])  # 464: tie, 448 is even
    fp4 = parse_format("e2m1fn").round(torch.tensor([7.0, -1e30, math.inf, math.nan])).tolist()
    assert fp4[:3] == [6.0, -6.0, 6.0] and math.isnan(fp4[3])


def test_signed_zero_and_underflow():
    fmt = parse_format("e4m3")  # smallest subnormal 2^-9
    q = 2.0**-9
    r = fmt.round(torch.tensor([-0.0, q / 2, -q / 2, q * 0.51, q * 1.5, q * 2.5, -1e-30]))
    assert r.tolist() == [0.0, 0.0, 0.0, q, 2 * q, 2 * q, 0.0]
    assert torch.signbit(r).tolist() == [True, False, True, False, False, False, True]


def test_describe_half():
    h = parse_format("half")
    assert (h.bits, h.bias, h.max_value, h.min_normal, h.min_subnormal, h.epsilon) == (
        16, 15, 65504.0, 2.0**-14, 2.0**-24, 2.0**-10,
    )
    assert parse_format("e4m3fn").max_value == 448 and parse_format("e2m3fn").max_value == 7.5


def test_round_accepts_half_inputs_and_writes_in_place():
    fmt = parse_format("e3m4")
    x = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    expected = fmt.round(x)
    assert torch.equal(fmt.round(x.half()), fmt.round(x.half().float()))
    y = x.clone()
    assert fmt.round_(y) is y and torch.equal(y, expected)
    strided = x.reshape(100, 10).t()
    assert torch.equal(fmt.round(strided), expected.reshape(100, 10).t())


def test_compiled_kernel_is_bit_identical_to_eager():
    """One compiled graph serves every format: check several, with special values mixed in."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(-(2**31), 2**31 - 1, (1 << 16,), dtype=torch.int32, generator=gen).view(torch.float32)
    x = torch.cat([x, torch.randn(1 << 16, generator=gen) * 100])
    for name in ("float16", "bfloat16", "e4m3", "e4m3fn", "e2m1fn", "e3m4-sat", "e4m0", "e1m2", "e8m23"):
        fmt = parse_format(name)
        eager = fmt.round(x, compiled=False)
        fused = fmt.round(x, compiled=True)
        assert torch.equal(eager.view(torch.int32), fused.view(torch.int32)), name
        y = x.clone()
        fmt.round_(y, compiled=True)
        assert torch.equal(y.view(torch.int32), eager.view(torch.int32)), name


# -- packing ------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", range(1, 33))
def test_pack_round_trip_every_width(bits):
    rng = np.random.default_rng(bits)
    for n in (0, 1, 7, 8, 13, 1000):
        codes = rng.integers(0, 1 << bits, size=n, dtype=np.int64)
        data = pack(torch.from_numpy(codes), bits)
        assert len(data) == math.ceil(n * bits / 8)
        assert np.array_equal(unpack(data, bits, n).numpy(), codes)


def test_pack_layout_is_lsb_first():
    assert pack(np.array([1, 2, 3]), 2) == bytes([0b00111001])
    assert pack(np.array([0x7FF]), 11) == bytes([0xFF, 0x07])


def test_pack_spans_chunks():
    rng = np.random.default_rng(5)
    codes = rng.integers(0, 1 << 11, size=(1 << 20) + 3, dtype=np.int64)
    assert np.array_equal(unpack(pack(codes, 11), 11, codes.size).numpy(), codes)


def test_pack_errors():
    with pytest.raises(FormatError, match=r"\[0, 2\^4\)"):
        pack(np.array([16]), 4)
    with pytest.raises(FormatError, match="integers"):
        pack(np.array([1.5]), 4)
    with pytest.raises(FormatError, match="from 1 to 32"):
        pack(np.array([1]), 33)
    with pytest.raises(FormatError, match="take 2 bytes, got 3"):
        unpack(b"abc", 4, 4)


def test_eleven_bit_model_takes_eleven_bits_a_weight():
    fmt = FloatFormat(5, 5)
    w = fmt.round(torch.randn(1000, generator=torch.Generator().manual_seed(2)))
    data = pack(fmt.encode(w).codes, fmt.bits)
    assert len(data) == 1375 == storage_bytes(fmt, [w])
    assert torch.equal(fmt.decode(Encoded(unpack(data, fmt.bits, 1000))), w)


# -- integer formats ----------------------------------------------------------------------------
def test_int8_per_channel_known_values():
    w = torch.tensor([[0.5, -1.27, 0.005, 1.27], [0.0, 0.0, 0.0, 0.0], [3.0, -0.75, 0.25, 1.5]])
    fmt = IntFormat(8)
    s = fmt.scales(w)
    expected_scales = np.array([1.27 / 127, 0.0, 3.0 / 127], dtype=np.float32).astype(np.float16)
    assert np.array_equal(s.numpy(), expected_scales.astype(np.float32))
    enc = fmt.encode(w)
    q = torch.where(enc.codes >= 128, enc.codes - 256, enc.codes)
    expected_q = np.clip(np.round(w.numpy() / np.where(s.numpy() == 0, 1, s.numpy())[:, None]), -127, 127)
    assert np.array_equal(q.numpy(), expected_q)
    assert q.abs().max() == 127 and (q[1] == 0).all()
    assert torch.equal(fmt.decode(enc), fmt.round(w))
    assert torch.equal(fmt.round(fmt.round(w)), fmt.round(w))


def test_int_ties_to_even_and_clamp():
    fmt = IntFormat(3)  # codes -3..3
    w = torch.tensor([3.0, 2.5, 1.5, 0.5, -0.5, -2.5, -3.0])
    assert fmt.round(w).tolist() == [3.0, 2.0, 2.0, 0.0, -0.0, -2.0, -3.0]


def test_int_storage_counts_scales():
    conv = torch.zeros(16, 3, 3, 3)
    bias = torch.zeros(16)
    assert storage_bytes(IntFormat(8), [conv, bias]) == 432 + 16 + 16 * 2 + 2
    assert storage_bytes(IntFormat(4, scale_format="float32"), [conv]) == 216 + 16 * 4
    assert storage_bytes(parse_format("e4m3"), [conv, bias]) == 448
    assert storage_bytes(FloatFormat(5, 6), [(16, 3, 3, 3)]) == 648
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    n_values = 4 * 27 + 4 + 4 * 4 + 1  # conv weight and bias, BN weight/bias/mean/var, counter
    assert storage_bytes(parse_format("half"), model) == n_values * 2


def test_int_refuses_non_finite_and_bad_decode():
    with pytest.raises(FormatError, match="infinities or NaN"):
        IntFormat(8).round(torch.tensor([1.0, math.inf]))
    with pytest.raises(FormatError, match="needs the scales"):
        IntFormat(8).decode(Encoded(torch.tensor([1])))
    with pytest.raises(FormatError, match="unused"):
        IntFormat(4).decode(Encoded(torch.tensor([8]), scales=torch.tensor([1.0])))


# -- names and validation -----------------------------------------------------------------------
@pytest.mark.parametrize("name", format_names() + ["e3m4", "e7m12", "e4m3-sat", "e5m2fn", "int5-s32"])
def test_names_round_trip(name):
    fmt = parse_format(name)
    assert parse_format(fmt.name) == fmt


def test_named_formats():
    assert parse_format("half") == FloatFormat(5, 10) == parse_format("E5M10")
    assert parse_format("tf32").bits == 19 and parse_format("bfloat16").bits == 16
    assert parse_format("e2m1fn").overflow == "saturate" and not parse_format("e2m1fn").has_nan
    assert parse_format("e4m3fn").has_nan and not parse_format("e4m3fn").has_inf
    assert parse_format("int8") == IntFormat(8) and parse_format("int8").bits == 8


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: FloatFormat(0, 3), "exp_bits must be an integer from 1 to 8"),
        (lambda: FloatFormat(9, 3), "exp_bits"),
        (lambda: FloatFormat(4, 24), "man_bits must be an integer from 0 to 23"),
        (lambda: FloatFormat(4, -1), "man_bits"),
        (lambda: FloatFormat(4, 3, overflow="wrap"), "overflow must be"),
        (lambda: FloatFormat(2, 1, finite_only=True, overflow="inf"), "neither infinity nor NaN"),
        (lambda: FloatFormat(1, 0), "no positive finite value"),
        (lambda: FloatFormat(8, 3, finite_only=True), "beyond float32's range"),
        (lambda: IntFormat(1), "2 to 8 bits"),
        (lambda: IntFormat(9), "2 to 8 bits"),
        (lambda: IntFormat(8, scale_format="float8"), "scale_format"),
        (lambda: parse_format("float12"), "unknown number format 'float12'; use one of float32, tf32"),
        (lambda: parse_format("e9m2"), "exp_bits"),
        (lambda: parse_format("e4m3").round(torch.tensor([1, 2])), "floating-point tensor"),
    ],
)
def test_bad_input_is_a_clear_format_error(make, message):
    with pytest.raises(FormatError, match=message):
        make()


def test_storage_of_a_search_space_model_matches_cost():
    from iotnas.cost import cost
    from iotnas.spaces import build

    model = build("mobilenetv2/s4/39")
    c = cost("mobilenetv2/s4/39")
    for name in ("float32", "float16", "e5m6", "e2m1fn"):
        fmt = parse_format(name)
        assert storage_bytes(fmt, model) == c.weight_bytes(fmt.bits)
    n_scales = sum(t.shape[0] if t.dim() >= 2 else 1 for t in model.state_dict().values())
    assert storage_bytes(IntFormat(8), model) == c.weight_bytes(8) + 2 * n_scales
