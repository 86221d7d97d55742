"""`iotnas export --c` on a model trained on real CIFAR-10 images: the C library in the export
folder, its checks and device budget in the JSON and the model card."""

from __future__ import annotations

import json
import re

from .c_support import require
from .conftest import MODEL


def test_cli_export_with_c(cli, trained_store, tmp_path):
    require("gcc", "arm-none-eabi-gcc")
    out = tmp_path / "x"
    code, stdout, err = cli("export", str(trained_store), MODEL, "--format", "int8", "--out", str(out), "--images",
                            "100", "--c", "--json")
    assert code == 0, err
    result = json.loads(stdout)
    lib = result["c_library"]
    assert sorted(p.name for p in (out / "c").iterdir()) == [
        "iotnas_avx2.h", "iotnas_int8.c", "iotnas_int8.h", "iotnas_int8_x86.h", "iotnas_model.c", "iotnas_model.h"]
    assert result["files"]["c/iotnas_model.c"] == (out / "c" / "iotnas_model.c").stat().st_size
    # int8: TensorFlow Lite's integer arithmetic, checked against the exported model_int8.tflite
    assert lib["arithmetic"] == "int8"
    assert lib["check"]["images"] == 100
    assert "LiteRT" in lib["check"]["reference"]
    step = result["tflite"]["output"]["scale"]
    assert lib["check"]["max_abs_diff"] <= lib["check"]["allowed_abs_diff"] < 1.01 * step  # one output step
    assert lib["check"]["agreement"] >= 0.99
    budget = lib["budget"]
    assert budget["target"] == "cortex-m4"
    assert result["weight_bytes"] <= budget["rodata_bytes"]
    assert budget["flash_bytes"] == budget["text_bytes"] + budget["rodata_bytes"] + budget["data_bytes"]
    assert budget["ram_bytes"] >= lib["arena_bytes"]
    card = (out / "MODEL_CARD.md").read_text()
    assert "## On a microcontroller" in card
    assert f"| {budget['flash_bytes']:,} |" in card and f"| {lib['arena_bytes']:,} |" in card
    undescribed = [name for name in result["files"] if re.search(rf"\| `{re.escape(name)}` \| [\d,]+ \|  \|", card)]
    assert not undescribed  # the card says what every written file is
    header = (out / "c" / "iotnas_model.h").read_text()
    assert f"#define IOTNAS_ARENA_BYTES {lib['arena_bytes']}u" in header


def test_cli_export_with_c_in_a_float_format(cli, trained_store, tmp_path):
    require("gcc")
    out = tmp_path / "x"
    code, stdout, err = cli("export", str(trained_store), MODEL, "--format", "e4m3", "--out", str(out), "--images",
                            "16", "--c", "--no-tflite", "--json")
    assert code == 0, err
    lib = json.loads(stdout)["c_library"]
    assert sorted(p.name for p in (out / "c").iterdir()) == [
        "iotnas_avx2.h", "iotnas_model.c", "iotnas_model.h", "iotnas_ops.c", "iotnas_ops.h", "iotnas_ops_avx2.c",
        "iotnas_ops_kernels.h"]
    assert lib["arithmetic"] == "float32"
    assert lib["check"]["max_abs_diff"] <= lib["check"]["allowed_abs_diff"] < 1e-3  # far below any class margin
    assert "weights decoded to float32" in (out / "MODEL_CARD.md").read_text()
    assert not (out / "model_int8.tflite").exists()


def test_export_without_c_writes_no_library(cli, trained_store, tmp_path):
    code, stdout, err = cli("export", str(trained_store), MODEL, "--out", str(tmp_path / "x"), "--images", "8",
                            "--json")
    assert code == 0, err
    assert json.loads(stdout)["c_library"] is None
    assert not (tmp_path / "x" / "c").exists()
    assert "On a microcontroller" not in (tmp_path / "x" / "MODEL_CARD.md").read_text()


def test_missing_compiler_is_one_line_and_nothing_is_written(cli, trained_store, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # a machine without gcc
    code, _, err = cli("export", str(trained_store), MODEL, "--out", str(tmp_path / "x"), "--images", "8", "--c")
    assert code == 2
    assert err.strip().count("\n") == 0 and "gcc is not installed" in err and "apt-get install gcc" in err
    assert not (tmp_path / "x").exists()
    assert not list(tmp_path.glob(".x.*"))
