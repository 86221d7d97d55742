"""`iotnas formats ...` end to end, in process."""

from __future__ import annotations

import json

import pytest


def test_list_names_every_named_format(cli):
    code, out, _ = cli("formats", "list", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert {"float32", "tf32", "bfloat16", "float16", "e5m2", "e4m3", "e4m3fn", "e3m2fn", "e2m3fn", "e2m1fn"} <= set(rows)
    assert {f"int{b}" for b in range(2, 9)} <= set(rows)
    assert rows["e4m3fn"]["max"] == 448 and "fp8_e4m3" in rows["e4m3fn"]["aliases"]
    code, out, _ = cli("formats", "list")
    assert code == 0 and "bfloat16" in out


def test_show_e5m10(cli):
    code, out, _ = cli("formats", "show", "e5m10", "--json")
    assert code == 0
    info = json.loads(out)
    assert info["bits"] == 16 and info["bias"] == 15 and info["max"] == 65504.0
    assert info["min_normal"] == 2.0**-14 and info["min_subnormal"] == 2.0**-24 and info["epsilon"] == 2.0**-10
    code, out, _ = cli("formats", "show", "e5m10")
    assert code == 0 and "65504.0" in out and "bias" in out


def test_round_json_in_input_order_with_non_finite_strings(cli):
    code, out, _ = cli("formats", "round", "e4m3", "0.1", "1e5", "-3", "-1e6", "nan", "0.0234375", "--json")
    assert code == 0
    assert json.loads(out) == [0.1015625, "inf", -3.0, "-inf", "nan", 0.0234375]


def test_round_negative_numbers_after_double_dash(cli):
    code, out, _ = cli("formats", "round", "e2m1fn", "--", "-0.3", "-100")
    assert code == 0
    assert out.split() == ["-0.3", "->", "-0.5", "-100", "->", "-6.0"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("formats", "round", "e4m3", "abc"), "not a number: 'abc'"),
        (("formats", "round", "float12", "1"), "unknown number format 'float12'"),
        (("formats", "show", "e4m24"), "man_bits must be an integer from 0 to 23"),
        (("formats", "show", "int9"), "2 to 8 bits"),
        (("formats", "round", "e4m3"), "Missing argument"),
    ],
)
def test_bad_input_is_one_line_exit_2(cli, args, message):
    code, out, err = cli(*args)
    assert code == 2
    assert err.startswith("iotnas: error:") and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
