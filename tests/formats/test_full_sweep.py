"""All 2^32 float32 inputs for half and bfloat16 (slow; also run by bench_formats.py --sweep)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import torch

from iotnas.formats import parse_format


@pytest.mark.slow
@pytest.mark.parametrize(("name", "dtype"), [("float16", np.float16), ("bfloat16", ml_dtypes.bfloat16)])
def test_every_float32_input(name, dtype):
    fmt = parse_format(name)
    chunk = 1 << 24
    base = torch.arange(chunk, dtype=torch.int64)
    out = torch.empty(chunk)
    bad = 0
    for lo in range(0, 1 << 32, chunk):
        x = (base + lo).to(torch.int32).view(torch.float32)
        fmt.round(x, out=out, compiled=True)
        ref = torch.from_numpy(x.numpy().astype(dtype).astype(np.float32))
        bad += int((~((out.view(torch.int32) == ref.view(torch.int32)) | (out.isnan() & ref.isnan()))).sum())
    assert bad == 0
