"""FloatFormat.round agrees bit for bit with numpy, ml_dtypes and apytypes.

Inputs per format: every finite value, every rounding point (midpoints between
neighbours, the overflow threshold) and the float32 numbers next to them,
every float16 bit pattern, and a large random sample of float32. A rounding
that breaks ties away from zero is built from the correct one and must be
caught by the same comparisons.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
import torch

from iotnas.formats import FloatFormat, parse_format

apytypes = pytest.importorskip("apytypes")

#: our name -> numpy/ml_dtypes dtype, where one exists.
FIXED_DTYPES = {
    "float16": np.float16,
    "bfloat16": ml_dtypes.bfloat16,
    "e5m2": ml_dtypes.float8_e5m2,
    "e4m3": ml_dtypes.float8_e4m3,
    "e3m4": ml_dtypes.float8_e3m4,
    "e4m3fn": ml_dtypes.float8_e4m3fn,
    "e3m2fn": ml_dtypes.float6_e3m2fn,
    "e2m3fn": ml_dtypes.float6_e2m3fn,
    "e2m1fn": ml_dtypes.float4_e2m1fn,
}

#: (e, m) checked against apytypes: corners (e=1, m=0, e=8) and odd splits.
APY_SMALL = [(1, 2), (2, 2), (3, 1), (4, 0), (2, 5), (3, 6), (5, 3), (6, 4), (7, 2), (8, 1), (5, 10), (4, 11), (6, 9)]
APY_LARGE = [(8, 10), (5, 18), (7, 16), (3, 20), (8, 22), (2, 23)]


# -- oracles ------------------------------------------------------------------------------------
def fixed_oracle(name: str):
    dtype = FIXED_DTYPES[name]

    def ref(x: np.ndarray) -> np.ndarray:
        return x.astype(dtype).astype(np.float32)

    return ref


def apy_oracle(e: int, m: int):
    def ref(x: np.ndarray) -> np.ndarray:
        arr = apytypes.APyFloatArray.from_float(x.astype(np.float64), exp_bits=e, man_bits=m)
        return arr.to_numpy().astype(np.float32)

    return ref


def all_codes_values(e: int, m: int) -> np.ndarray:
    """Every value of the (e, m) IEEE format, from apytypes (not from our decoder)."""
    codes = np.arange(1 << (1 + e + m), dtype=np.int64)
    return apytypes.APyFloatArray.from_bits(codes, exp_bits=e, man_bits=m).to_numpy().astype(np.float32)


def fixed_values(name: str) -> np.ndarray:
    dtype = FIXED_DTYPES[name]
    bits = 8 * np.dtype(dtype).itemsize
    if name in ("e3m2fn", "e2m3fn"):
        bits = 6
    if name == "e2m1fn":
        bits = 4
    codes = np.arange(1 << bits, dtype=np.uint16 if bits == 16 else np.uint8)
    return codes.view(dtype).astype(np.float32)


# -- inputs -------------------------------------------------------------------------------------
def boundary_inputs(values: np.ndarray) -> np.ndarray:
    """Each finite value, each midpoint between neighbours and the float32 numbers around both."""
    finite = np.unique(np.abs(values[np.isfinite(values)]).astype(np.float64))
    top = finite[-1]
    gap = top - finite[-2]
    points = np.concatenate([finite, (finite[1:] + finite[:-1]) / 2, [top + gap / 2, top + gap, 2 * top, 1e38]])
    points = points.astype(np.float32)
    assert np.all(points.astype(np.float64)[: 2 * len(finite) - 1] == np.concatenate(
        [finite, (finite[1:] + finite[:-1]) / 2]
    )), "a rounding point is not exact in float32"
    near = np.concatenate(
        [points, np.nextafter(points, np.float32(0)), np.nextafter(points, np.float32(np.inf))]
    )
    near = np.concatenate([near, [np.inf, np.nan, 0.0, np.float32(1e-45)]]).astype(np.float32)
    return np.concatenate([near, -near])


def float16_patterns() -> np.ndarray:
    return np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)


def random_inputs(fmt: FloatFormat, n: int = 1 << 19, seed: int = 0) -> np.ndarray:
    """Random bit patterns (all of float32) plus values log-uniform over the format's range."""
    rng = np.random.default_rng(seed)
    patterns = rng.integers(0, 1 << 32, size=n, dtype=np.uint64).astype(np.uint32).view(np.float32)
    lo, hi = math.log2(fmt.min_subnormal) - 3, math.log2(fmt.max_value) + 2
    mags = np.exp2(rng.uniform(lo, hi, size=n)).astype(np.float32)
    signs = np.where(rng.random(n) < 0.5, -1, 1).astype(np.float32)
    return np.concatenate([patterns, mags * signs])


# -- comparison ---------------------------------------------------------------------------------
def mismatches(ours: np.ndarray, ref: np.ndarray, x: np.ndarray) -> list[tuple[float, float, float]]:
    same = (ours.view(np.uint32) == ref.view(np.uint32)) | (np.isnan(ours) & np.isnan(ref))
    bad = np.flatnonzero(~same)
    return [(float(x[i]), float(ours[i]), float(ref[i])) for i in bad[:5]] + ([len(bad)] if len(bad) else [])


def correct(fmt: FloatFormat):  # float32 or float64 inputs
    return lambda x: fmt.round(torch.from_numpy(x)).numpy()


def ties_away(fmt: FloatFormat):
    """A deliberately wrong rounding: ties away from zero, everything else unchanged."""

    def wrong(x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(x)
        a = t.abs()
        down = fmt.round(torch.nextafter(a, torch.zeros_like(a)))
        up = fmt.round(torch.nextafter(a, torch.full_like(a, math.inf)))
        tie = ((down.double() + up.double()) / 2 == a.double()) & (down != up)
        return torch.where(tie, up.copysign(t.float()), fmt.round(t)).numpy()

    return wrong


def without_nan_if_unsupported(fmt: FloatFormat, x: np.ndarray) -> np.ndarray:
    # ml_dtypes turns NaN into -0 for fp6/fp4; we keep NaN (documented) and encode() refuses it.
    return x if fmt.has_nan else x[~np.isnan(x)]


# -- tests against numpy / ml_dtypes ------------------------------------------------------------
@pytest.mark.parametrize("name", list(FIXED_DTYPES))
def test_fixed_dtypes_every_value_and_rounding_point(name):
    fmt = parse_format(name) if name != "e3m4" else FloatFormat(3, 4)
    values = fixed_values(name)
    x = without_nan_if_unsupported(fmt, boundary_inputs(values))
    assert mismatches(correct(fmt)(x), fixed_oracle(name)(x), x) == []
    finite = values[np.isfinite(values)]
    assert np.array_equal(correct(fmt)(finite).view(np.uint32), finite.view(np.uint32))


@pytest.mark.parametrize("name", list(FIXED_DTYPES))
def test_fixed_dtypes_float16_patterns_and_random(name):
    fmt = parse_format(name) if name != "e3m4" else FloatFormat(3, 4)
    x = without_nan_if_unsupported(fmt, np.concatenate([float16_patterns(), random_inputs(fmt)]))
    assert mismatches(correct(fmt)(x), fixed_oracle(name)(x), x) == []


@pytest.mark.parametrize("name", list(FIXED_DTYPES))
def test_ties_away_is_caught_by_fixed_dtypes(name):
    fmt = parse_format(name) if name != "e3m4" else FloatFormat(3, 4)
    x = without_nan_if_unsupported(fmt, boundary_inputs(fixed_values(name)))
    assert mismatches(ties_away(fmt)(x), fixed_oracle(name)(x), x) != []


# -- tests against apytypes for arbitrary (e, m) ------------------------------------------------
@pytest.mark.parametrize(("e", "m"), APY_SMALL)
def test_apytypes_every_value_and_rounding_point(e, m):
    fmt = FloatFormat(e, m)
    values = all_codes_values(e, m)
    x = np.concatenate([boundary_inputs(values), float16_patterns()])
    assert mismatches(correct(fmt)(x), apy_oracle(e, m)(x), x) == []
    assert mismatches(ties_away(fmt)(x), apy_oracle(e, m)(x), x) != []


@pytest.mark.parametrize(("e", "m"), APY_SMALL + APY_LARGE)
def test_apytypes_random(e, m):
    fmt = FloatFormat(e, m)
    x = random_inputs(fmt, n=1 << 16, seed=e * 100 + m)
    assert mismatches(correct(fmt)(x), apy_oracle(e, m)(x), x) == []


@pytest.mark.parametrize(("e", "m"), APY_LARGE)
def test_apytypes_rounding_points_of_wide_formats(e, m):
    """Formats too wide to enumerate: rounding points around random codes."""
    rng = np.random.default_rng(e + m)
    codes = rng.integers(0, 1 << (e + m), size=4096)
    values = apytypes.APyFloatArray.from_bits(codes, exp_bits=e, man_bits=m).to_numpy()
    values = values[np.isfinite(values)]
    fmt = FloatFormat(e, m)
    ulp = np.exp2(np.floor(np.log2(np.maximum(values, fmt.min_normal))) - m)
    top_gap = math.ldexp(1, math.floor(math.log2(fmt.max_value)) - m)
    # float64 inputs: midpoints of m = 23 formats need 24 bits
    x = np.concatenate([values + ulp / 2, values - ulp / 2, [fmt.max_value + top_gap / 2]])
    x = np.concatenate([x, np.nextafter(x, 0), np.nextafter(x, np.inf)])
    x = np.concatenate([x, -x])
    assert mismatches(correct(fmt)(x), apy_oracle(e, m)(x), x) == []
    assert mismatches(ties_away(fmt)(x), apy_oracle(e, m)(x), x) != []


def test_float64_inputs_are_rounded_once():
    """float64 values between float32 numbers must not be rounded twice."""
    rng = np.random.default_rng(7)
    fmt = FloatFormat(5, 10)
    base = np.arange(1 << 15, dtype=np.uint16).view(np.float16).astype(np.float64)
    base = base[np.isfinite(base)]
    # just above each float16 midpoint by less than a float32 ulp: float32 would make them ties
    halfway = base[:-1] + (base[1:] - base[:-1]) / 2
    x = np.concatenate([halfway * (1 + 2.0**-40), halfway * (1 - 2.0**-40), rng.standard_normal(1 << 16)])
    ours = fmt.round(torch.from_numpy(x)).numpy()
    assert mismatches(ours, apy_oracle(5, 10)(x), x.astype(np.float32)) == []
    assert mismatches(ours, x.astype(np.float16).astype(np.float32), x.astype(np.float32)) == []


def test_float32_is_identity_and_subnormals_survive():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 1 << 32, size=1 << 16, dtype=np.uint64).astype(np.uint32).view(np.float32)
    x = x[~np.isnan(x)]
    assert np.array_equal(parse_format("float32").round(torch.from_numpy(x)).numpy().view(np.uint32), x.view(np.uint32))
