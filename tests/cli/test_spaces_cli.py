"""`iotnas spaces list` / `sample`: output, the documented JSON schema, and one-line errors."""

from __future__ import annotations

import json

import pytest

SCHEMA_KEYS = {"schema", "key", "space", "law", "id", "args", "num_classes", "input_shape", "n_values", "macs",
               "flops", "weight_bytes", "peak_activation_bytes"}


def test_list_shows_every_space_and_law(cli):
    code, out, _ = cli("spaces", "list")
    assert code == 0
    for name in ("densenet", "googlenet", "mobilenetv2", "pnasnet", "resnext", "resnet", "probenet", "compact"):
        assert name in out
    assert "[16, 1280)" not in out and "[128, 1280)" in out  # mobilenetv2 s1 io_out
    assert "What each law yields (ids 0-63" in out and "min / median / max" in out and "compact/s6" in out


def test_list_shows_what_each_law_yields(cli):
    """Value counts and ids per budget, checked against costing the ids afresh."""
    from iotnas.arch import Arch
    from iotnas.cost import cost

    code, out, _ = cli("spaces", "list", "--json")
    assert code == 0
    data = {d["space"]: d for d in json.loads(out)}
    y = data["compact"]["yields"]["s6"]
    values = sorted(cost(Arch("compact", "s6", i)).n_values for i in range(64))
    assert y["ids"] == y["runnable"] == 64
    assert y["n_values"] == {"min": values[0], "median": values[31], "max": values[-1]}
    assert y["within_kib"]["float32"]["4"] == sum(v * 4 <= 4096 for v in values) > 0
    assert set(y["within_kib"]) == {"float32", "half", "8-bit"}
    assert list(y["within_kib"]["half"]) == ["4", "8", "16", "32", "64", "128"]
    for law in data["densenet"]["yields"].values():  # counts grow with the budget and with narrower formats
        for counts in law["within_kib"].values():
            assert list(counts.values()) == sorted(counts.values())
        assert law["within_kib"]["float32"]["32"] <= law["within_kib"]["half"]["32"] <= law["within_kib"]["8-bit"]["32"]
    assert data["densenet"]["yields"]["s2"]["runnable"] == 63  # densenet/s2/41 cannot run
    assert data["googlenet"]["yields"]["s1"]["within_kib"]["8-bit"]["128"] == 0  # millions of values

    code, out, _ = cli("spaces", "list")
    assert f"{values[0]:,} / {values[31]:,} / {values[-1]:,}" in out


def test_list_json(cli):
    code, out, _ = cli("spaces", "list", "--json")
    data = json.loads(out)
    assert code == 0 and [d["space"] for d in data][:2] == ["densenet", "googlenet"]
    by_name = {d["space"]: d for d in data}
    assert by_name["probenet"]["aliases"] == ["random_net_probenet_s", "probenet_s"]
    assert data[0]["laws"]["s3"] == {"nblocks": "[1, 8)", "growth_rate": "[1, 8)", "reduction_percent": "[50, 80)"}


@pytest.mark.parametrize("argv", [("mobilenetv2", "s4", "39"), ("random_net_mobilenetv2/s4/39",),
                                  ('{"space":"mobilenetv2","law":"s4","id":39}',)])
def test_sample_json_schema(cli, argv):
    code, out, err = cli("spaces", "sample", *argv, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert set(data) == SCHEMA_KEYS
    assert (data["space"], data["law"], data["id"], data["key"]) == ("mobilenetv2", "s4", 39, "mobilenetv2/s4/39")
    assert data["args"]["io_planes"] == [20, 84]
    assert (data["n_values"], data["flops"]) == (16234, 4750344)  # released values (spec section 14)
    assert data["weight_bytes"] == {"float32": 4 * 16234, "half": 2 * 16234}
    assert data["peak_activation_bytes"]["float32"] == 2 * data["peak_activation_bytes"]["half"] > 0
    assert data["macs"] < data["flops"] and data["input_shape"] == [3, 32, 32]


def test_sample_explicit_args_and_mnist_shape(cli):
    arch = '{"space":"probenet","args":{"fs":[6,7,2],"ks":[3,3,5,1,5,1]}}'
    code, out, _ = cli("spaces", "sample", arch, "--json", "--in-channels", "1")
    data = json.loads(out)
    assert code == 0 and data["law"] is None and data["id"] is None
    assert data["key"].startswith("probenet/args/") and data["n_values"] == 835 - 2 * 9 * 6
    assert data["input_shape"] == [1, 32, 32]


def test_sample_human_output(cli):
    code, out, _ = cli("spaces", "sample", "densenet", "s3", "36")
    assert code == 0
    assert "densenet/s3/36" in out and "7,654" in out and "2,376,988" in out and "30,616" in out


@pytest.mark.parametrize(("argv", "needle"), [
    (("vgg", "s1", "0"), "unknown search space 'vgg'; known spaces: densenet"),
    (("densenet", "s9", "0"), "no law 's9'; known laws: s1, s2, s3"),
    (("densenet", "s1", "-1"), "non-negative integer"),
    (("densenet", "s1", "2.5"), "non-negative integer"),
    (("densenet", "s1", "x"), "non-negative integer"),
    (("densenet", "s1", "4294967296"), "[0, 2**32)"),
    (('{"space": "densenet", "law": ',), "malformed Arch JSON"),
    (('{"space":"densenet","law":"s1"}',), "needs the keys"),
    (("densenet", "s1"), "expected SPACE LAW ID"),
    (("densenet", "s2", "41"), "0 output channels"),
])
def test_bad_input_is_one_line_and_exit_2(cli, argv, needle):
    code, out, err = cli("spaces", "sample", *argv)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("iotnas: error:")
    assert needle in err and "Traceback" not in err
