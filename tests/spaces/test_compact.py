"""The compact space: sampling rules, counts checked by hand, and the rest of the tool on it
(kernel trace, ONNX export run by ONNX Runtime, packed weights and the C header)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iotnas.arch import Arch
from iotnas.cost import cost
from iotnas.errors import ArchError
from iotnas.spaces import build, get_space
from iotnas.spaces.compact import CONV, DWSEP, FUSED, RESOLUTION_KEEPING, STAGES

SPACE = get_space("compact")
#: Every block kind, both stem strides, skips inside stages and a dwsep block without expansion.
MIXED = {"stem": [8, 1], "stages": [[CONV, 12, 2, 1], [FUSED, 16, 2, 2], [DWSEP, 24, 2, 1]]}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _bn(c: int) -> int:
    return 4 * c + 1  # weight, bias, running mean and variance, num_batches_tracked


def test_values_counted_by_hand():
    """Each block's weights written out from the definitions in docs/spaces.md."""
    stem = 3 * 9 * 8 + _bn(8)
    conv = (9 * 8 * 12 + _bn(12)) + (9 * 12 * 12 + _bn(12))
    fused = (9 * 12 * 24 + _bn(24) + 24 * 16 + _bn(16)) + (9 * 16 * 32 + _bn(32) + 32 * 16 + _bn(16))
    dwsep = (9 * 16 + _bn(16) + 16 * 24 + _bn(24)) + (9 * 24 + _bn(24) + 24 * 24 + _bn(24))  # expansion 1: no 1x1
    linear = 24 * 10 + 10
    c = cost(Arch.from_args("compact", MIXED))
    assert c.n_values == stem + conv + fused + dwsep + linear
    assert c.n_values == sum(t.numel() for t in build(Arch.from_args("compact", MIXED), seed=0).state_dict().values())


def test_maps_halve_in_each_stage_and_the_stem_stride_adds_one():
    for stride, final in ((1, 4), (2, 2)):
        args = {**MIXED, "stem": [8, stride]}
        model = build(Arch.from_args("compact", args), seed=0).eval()
        seen: list[torch.Size] = []
        model.layers[-1].register_forward_hook(lambda _m, _i, out, seen=seen: seen.append(out.shape))
        with torch.no_grad():
            model(torch.zeros(1, 3, 32, 32))
        assert seen == [torch.Size([1, 24, final, final])]


def _map_sizes(args: dict) -> list[int]:
    """Side of the map after the stem and after each stage."""
    model = build(Arch.from_args("compact", args), seed=0).eval()
    sides: list[int] = []
    model.stem.register_forward_hook(lambda _m, _i, out: sides.append(out.shape[-1]))
    last_of_stage = [sum(row[2] for row in args["stages"][:i + 1]) - 1 for i in range(STAGES)]
    for i in last_of_stage:
        model.layers[i].register_forward_hook(lambda _m, _i, out: sides.append(out.shape[-1]))
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    return sides


@pytest.mark.parametrize(("strides", "sides"), [((2, 2, 1), [32, 16, 8, 8]), ((1, 2, 2), [32, 32, 16, 8])])
def test_a_stage_with_stride_1_keeps_its_map_at_the_same_values(strides, sides):
    keeping = {**MIXED, "strides": list(strides)}
    assert _map_sizes(MIXED) == [32, 16, 8, 4]
    assert _map_sizes(keeping) == sides
    assert cost(Arch.from_args("compact", keeping)).n_values == cost(Arch.from_args("compact", MIXED)).n_values
    assert cost(Arch.from_args("compact", keeping)).macs > cost(Arch.from_args("compact", MIXED)).macs


def test_r_laws_draw_the_s_laws_networks_with_a_resolution_keeping_schedule():
    """An r law's id is its s law's id plus drawn strides; the s laws' networks are as they were."""
    assert SPACE.sample("s3", 0) == {"stem": [12, 2], "stages": [[0, 11, 1, 1], [1, 21, 2, 1], [1, 26, 1, 1]]}
    drawn = set()
    for id in range(40):
        r = SPACE.sample("r3", id)
        assert {k: v for k, v in r.items() if k != "strides"} == SPACE.sample("s3", id)
        drawn.add(tuple(r["strides"]))
    assert drawn == set(RESOLUTION_KEEPING)
    assert "strides" in SPACE.law("r3").ranges() and "strides" not in SPACE.law("s3").ranges()


def test_skips_only_where_shapes_match():
    model = build(Arch.from_args("compact", MIXED), seed=0)
    assert [getattr(b, "skip", None) for b in model.layers] == [None, None, False, True, False, True]
    assert model.layers[4].expand is None  # dwsep at expansion 1: depthwise directly on the input


@pytest.mark.parametrize("law", list(SPACE.laws))
def test_sampled_stages_are_ordered_dense_first_and_within_the_law(law):
    rules = SPACE.law(law)
    for id in range(40):
        args = SPACE.sample(law, id)
        kinds = [row[0] for row in args["stages"]]
        assert kinds == sorted(kinds) and len(kinds) == STAGES
        assert rules.stem_width.lo <= args["stem"][0] < rules.stem_width.hi and args["stem"][1] in (1, 2)
        for row, width in zip(args["stages"], (rules.width1, rules.width2, rules.width3)):
            assert width.lo <= row[1] < width.hi
            assert rules.blocks.lo <= row[2] < rules.blocks.hi and rules.expansion.lo <= row[3] < rules.expansion.hi


def test_sampling_repeats_and_leaves_numpy_global_state_alone():
    np.random.seed(5)
    state = np.random.get_state()[1].copy()
    assert SPACE.sample("s3", 12) == SPACE.sample("s3", 12)
    assert SPACE.sample("s3", 12) != SPACE.sample("s3", 13)
    assert (np.random.get_state()[1] == state).all()


def test_laws_grow_from_s6_to_s1():
    """Medians of the first ids rise law by law, so the laws tile the budgets from 4 KiB up."""
    halving = [law for law in SPACE.laws if law.startswith("s")]
    medians = [float(np.median([cost(Arch("compact", law, i)).n_values for i in range(15)])) for law in halving]
    assert medians == sorted(medians, reverse=True)
    float32_values_in_4_kib, int8_values_in_128_kib = 1_024, 131_072
    assert medians[-1] < float32_values_in_4_kib and medians[0] > int8_values_in_128_kib / 2


@pytest.mark.parametrize("bad", [
    {"stem": [8, 3], "stages": MIXED["stages"]},
    {"stem": [8, 1], "stages": MIXED["stages"][:2]},
    {"stem": [8, 1], "stages": [[3, 12, 1, 1], *MIXED["stages"][1:]]},
    {"stem": [8, 1], "stages": [[CONV, 0, 1, 1], *MIXED["stages"][1:]]},
    {"stem": [8, 1], "stages": [[CONV, 12, 1, True], *MIXED["stages"][1:]]},
    {"stem": [8, 1]},
    {**MIXED, "strides": [2, 2]},
    {**MIXED, "strides": [2, 3, 1]},
    {**MIXED, "strides": [2, 2, True]},
    {**MIXED, "strides": [2, 2, 2]},  # the default, written out: a second args form of the same network
    {**MIXED, "extra": 1},
])
def test_malformed_arguments_are_refused(bad):
    with pytest.raises(ArchError, match="compact"):
        build(Arch.from_args("compact", bad))


def test_kernel_trace_describes_every_operator():
    """The latency predictor sees convolutions with folded BN and ReLU, additions, one global pool."""
    from iotnas.latency.kernels import arch_kernels

    kinds = [k.kind for k in arch_kernels(Arch.from_args("compact", MIXED))]
    assert kinds.count("conv") == 1 + 2 + 4 + 4 and kinds.count("add") == 2
    assert kinds.count("gap") == 1 and kinds[-1] == "linear"


@pytest.mark.parametrize("key", ["compact/s4/3", "compact/r4/3", "compact/r4/4"])
def test_onnx_export_runs_in_onnx_runtime_like_pytorch(key):
    import onnxruntime as ort

    from iotnas.latency.runtimes import export_onnx

    model = build(Arch.parse(key), seed=0).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # a few steps of statistics so the folded BatchNorm is not the identity
        model.train()
        for _ in range(3):
            model(x)
        model.eval()
        expected = model(x[:1]).numpy()
    session = ort.InferenceSession(export_onnx(model, input_shape=(1, 3, 32, 32)), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": x[:1].numpy()})
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_packed_int8_weights_and_c_header(tmp_path):
    """Packed at 8 bits, the deployed network (BatchNorm folded, then rounded) loads back bit for bit."""
    from iotnas.export import deploy, load_packed
    from iotnas.export._cheader import c_header
    from iotnas.export._packed import write_packed
    from iotnas.formats import parse_format

    arch = Arch("compact", "s5", 1)
    model = build(arch, seed=0).eval()
    deployed = deploy(model, parse_format("int8"))
    header = write_packed(tmp_path, deployed.module.state_dict(), parse_format("int8"),
                          meta={"arch": arch.to_json(), "num_classes": 10, "in_channels": 3, "model_key": arch.key,
                                "input": {"height": 32, "width": 32, "mean": [125.3, 123.0, 113.9],
                                          "std": [63.0, 62.1, 66.7]}})
    assert header["codes_bytes"] <= cost(arch).weight_bytes(8)  # folding leaves fewer values than promised
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(load_packed(tmp_path)(x), deployed.module(x))
    text = c_header(header, (tmp_path / "weights.bin").read_bytes())
    assert "IOTNAS_COMPACT_S5_1_H" in text and '"layers.0.conv.0.weight"' in text
    assert f"#define IOTNAS_N_VALUES {deployed.n_values}u" in text


@pytest.mark.parametrize("bits", [32, 16, 8])
@pytest.mark.parametrize("kib", [4, 8, 16, 32, 64, 128])
def test_every_budget_has_many_candidates_in_every_format(kib, bits):
    """Among ids 0-63 of the laws, at least 16 fit each budget from 4 to 128 KiB at 32, 16 and 8 bits."""
    from iotnas.results.limits import Limits
    from iotnas.spaces.yields import law_yield

    limits = Limits(max_weight_bytes=kib * 1024)
    counts = {law: law_yield("compact", law).count_within(limits, bits=bits) for law in SPACE.laws}
    assert sum(counts.values()) >= 16, counts
    # and not only by tiny models: some candidate uses at least a quarter of the budget
    big = Limits(max_weight_bytes=kib * 1024 // 4)
    assert sum(counts.values()) > sum(law_yield("compact", law).count_within(big, bits=bits) for law in SPACE.laws)
