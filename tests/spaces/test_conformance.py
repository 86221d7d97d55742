"""Conformance with the released model set (search-spaces.md section 13), all 1,617 records.

Each released model is built once (weights allocated, random init skipped) and counted
with :func:`iotnas.cost.count`; the checks below all read that one pass.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import pytest

from iotnas.arch import Arch, canonical_json
from iotnas.cost import count, skeleton

ARGS_DIGEST = "55b48569414870ba7b1cd0bc747618ae66d386a34249efae32c22954ddac0434"
ARGS_PARAMS_DIGEST = "e1a76255807549652f8cfac654cef578628c1f69b4eb96704848f6d43a21709f"
STATE_DICT_DIGEST = "22c5549cb26c4b0d66e9c5e79d37aa3d3b545e419d77f35ae30d4b518e85c0bf"


@dataclass(frozen=True)
class Counted:
    record: dict
    args_json: str
    n_values: int
    flops: int
    state_dict_line: str


def _digest(lines: list[str]) -> str:
    return hashlib.sha256(("\n".join(lines) + "\n").encode("utf-8")).hexdigest()


@pytest.fixture(scope="module")
def records(released_dir):
    data = json.loads((released_dir / "NetConfigs.json").read_text())
    assert len(data) == 1617
    return data


@pytest.fixture(scope="module")
def counted(records) -> list[Counted]:
    out = []
    for r in records:
        arch = Arch(r["spacename"], r["law"], r["id"])
        model = skeleton(arch)
        sd = ";".join(f"{k}:[{','.join(map(str, v.shape))}]" for k, v in model.state_dict().items())
        c = count(model, (3, 32, 32))
        line = f"{r['spacename']} {r['law']} {r['id']} {sd}"
        out.append(Counted(r, canonical_json(arch.args), c.n_values, c.flops, line))
    return out


def test_n_values_equal_released_params_for_every_record(counted):
    wrong = [(c.record["spacename"], c.record["law"], c.record["id"], c.n_values, c.record["params"])
             for c in counted if c.n_values != c.record["params"]]
    assert not wrong, f"{len(wrong)} / {len(counted)} differ, e.g. {wrong[:5]}"


def test_flops_equal_released_flops_for_every_record(counted):
    wrong = [(c.record["spacename"], c.record["law"], c.record["id"], c.flops, c.record["flops"])
             for c in counted if c.flops != int(c.record["flops"]) or float(c.flops) != c.record["flops"]]
    assert not wrong, f"{len(wrong)} / {len(counted)} differ, e.g. {wrong[:5]}"


def test_sampled_arguments_digest(counted):
    lines = [f"{c.record['spacename']} {c.record['law']} {c.record['id']} {c.args_json}" for c in counted]
    assert _digest(lines) == ARGS_DIGEST


def test_sampled_arguments_with_our_params_digest(counted):
    lines = [f"{c.record['spacename']} {c.record['law']} {c.record['id']} {c.n_values} {c.args_json}" for c in counted]
    assert _digest(lines) == ARGS_PARAMS_DIGEST


def test_state_dict_keys_order_and_shapes_digest(counted):
    assert _digest([c.state_dict_line for c in counted]) == STATE_DICT_DIGEST


def test_models_sharing_arguments_share_released_size_and_flops(counted):
    """Arguments decide a model: ids drawn alike must be the same network in the released data too."""
    by_args: dict[tuple[str, str], set[tuple[int, float]]] = {}
    for c in counted:
        by_args.setdefault((c.record["spacename"], c.args_json), set()).add((c.record["params"], c.record["flops"]))
    clashes = {k: v for k, v in by_args.items() if len(v) > 1}
    assert not clashes, f"{len(clashes)} argument sets name released models of different sizes, e.g. {list(clashes.items())[:2]}"
    assert len(by_args) > 1500  # nearly every draw is a distinct network
