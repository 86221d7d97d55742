"""Exports of a model trained on real CIFAR-10 images: sizes, ONNX, the packed loader, the C header, bad input."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from iotnas.arch import Arch
from iotnas.errors import ExportError
from iotnas.export import (
    ONNX_TOLERANCE,
    OPSET,
    deploy,
    export_model,
    load_packed,
    read_packed,
)
from iotnas.formats import parse_format, storage_bytes
from iotnas.spaces import build
from iotnas.store import Store
from iotnas.train import load_checkpoint

from .conftest import MODEL

#: 32, 8 (two splits), 6 (values straddle bytes), a 4-bit float, half, a 12-bit float, and integers with scales.
FORMATS = ["float32", "e4m3", "e3m4", "e3m2fn", "e2m1fn", "float16", "e5m6", "int8", "int4"]


def _trained_model(store_path: Path) -> torch.nn.Module:
    """The trained model rebuilt straight from its checkpoint (independently of the exporter)."""
    ckpt = load_checkpoint(store_path.parent / "runs" / MODEL.replace("/", "_") / "checkpoint.pt")
    model = build(Arch.parse(MODEL), num_classes=10, in_channels=3)
    model.load_state_dict(ckpt.final_weights())
    return model.eval()


def _images(dataset, n: int) -> torch.Tensor:
    x = dataset.test_images[:n].float()
    return (x - dataset.channel_mean.view(1, -1, 1, 1)) * (1.0 / dataset.channel_std.view(1, -1, 1, 1))


@pytest.fixture(scope="module")
def exports(trained_store: Path, cifar_small, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("exports")
    with Store.open(str(trained_store), create=False) as store:
        for fmt in FORMATS:
            # model_int8.tflite is the same file whatever the format: build and check it once.
            export_model(store, MODEL, format_name=fmt, out_dir=out / fmt, dataset=cifar_small, check_images=32,
                         tflite=fmt == "int8")
    return {fmt: out / fmt for fmt in FORMATS}


@pytest.mark.parametrize("fmt", FORMATS)
def test_packed_size_is_the_deployed_bytes_within_the_promise(exports, trained_store, fmt):
    folder = exports[fmt]
    tflite = ["model_int8.tflite"] if fmt == "int8" else []
    assert sorted(p.name for p in folder.iterdir()) == [
        "MODEL_CARD.md", "model.h", "model.onnx", *tflite, "weights.bin", "weights.json"]
    header = json.loads((folder / "weights.json").read_text())
    model = _trained_model(trained_store)
    deployed = deploy(model, fmt)
    assert header["n_values"] == deployed.n_values < sum(t.numel() for t in model.state_dict().values())
    bits = parse_format(fmt).bits
    assert header["codes_bytes"] == math.ceil(deployed.n_values * bits / 8)
    # Integer formats add their per-channel scales, exactly as the format counts them.
    assert (folder / "weights.bin").stat().st_size == deployed.weight_bytes
    assert deployed.weight_bytes <= storage_bytes(parse_format(fmt), model) == deployed.promised_bytes
    assert [t["name"] for t in header["tensors"]] == list(deployed.tensors)


@pytest.mark.parametrize("fmt", FORMATS)
def test_packed_loader_equals_the_deployed_model_bit_for_bit(exports, trained_store, cifar_small, fmt):
    model = _trained_model(trained_store)
    x = _images(cifar_small, 32)
    with torch.no_grad():
        expected = deploy(model, fmt).module(x)
    restored = load_packed(exports[fmt])
    with torch.no_grad():
        got = restored(x)
    assert torch.equal(got, expected)


#: Stored initializers of a format ONNX model (codes, scales, 16-bit values); float32 keeps state-dict names.
STORED = ("_codes", "_scales", "_f16", "_bf16")


@pytest.mark.parametrize("fmt", FORMATS)
def test_onnx_matches_the_deployed_model_on_real_images_at_the_promised_size(exports, trained_store, cifar_small,
                                                                             fmt):
    path = exports[fmt] / "model.onnx"
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version == OPSET
    model = _trained_model(trained_store)
    deployed = deploy(model, fmt)
    x = _images(cifar_small, 64)
    with torch.no_grad():
        expected = deployed.module(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    got = np.concatenate([session.run(None, {name: x[i:i + 1].numpy()})[0] for i in range(len(x))])
    np.testing.assert_allclose(got, expected, rtol=0, atol=ONNX_TOLERANCE * max(1.0, float(np.abs(expected).max())))
    # The weights are in the file as the format stores them: exactly weights.bin's bytes.
    sizes = {i.name: len(onnx.numpy_helper.to_array(i).tobytes()) if not i.raw_data or i.data_type == 16
             else len(i.raw_data) for i in proto.graph.initializer}
    stored = sum(v for k, v in sizes.items() if k in STORED) if fmt != "float32" else \
        sum(v for k, v in sizes.items() if k in deployed.tensors)
    assert stored == deployed.weight_bytes == (exports[fmt] / "weights.bin").stat().st_size
    assert not any(k in deployed.tensors for k in sizes) or fmt == "float32"  # no float32 copy left behind
    # Overhead: the float32 graph's own (names, shapes), the format's tables, and a little decoding per tensor.
    float32_overhead = (exports["float32"] / "model.onnx").stat().st_size - 4 * deployed.n_values
    tables = sum(v for k, v in sizes.items() if k in ("_table", "_step", "_lead"))
    allowed = float32_overhead + tables + 256 * len(deployed.tensors) + 2048
    assert path.stat().st_size <= deployed.promised_bytes + allowed


def test_model_card_states_the_figures(exports):
    card = (exports["e4m3"] / "MODEL_CARD.md").read_text()
    header = json.loads((exports["e4m3"] / "weights.json").read_text())
    assert f"# Model card: {MODEL} in e4m3" in card
    assert f"{header['n_values']:,} bytes deployed" in card  # 8 bits per value
    assert "opset 17" in card and "Latency" in card and "1.25 ms" in card
    assert "| Classes | 10: airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck |" in card
    assert "zero-padded" in card and "*before* normalising" in card and "RGB order" in card
    assert "0 = airplane" in card
    for fmt in ("e4m3", "int8"):  # every file with its bytes
        card = (exports[fmt] / "MODEL_CARD.md").read_text()
        for name in sorted(p.name for p in exports[fmt].iterdir()):
            assert f"| `{name}` | {(exports[fmt] / name).stat().st_size:,} |" in card


C_PROGRAM = r"""
#include <stdio.h>
#include "model.h"
int main(void) {
    for (uint32_t t = 0; t < IOTNAS_N_TENSORS; ++t) {
        const iotnas_tensor_t *e = &iotnas_tensors[t];
        for (uint32_t i = 0; i < e->count; ++i) {
            uint32_t code = iotnas_code(e->offset + i);
#if IOTNAS_FORMAT_IS_FLOAT
            float v = iotnas_decode(code);
#else
            float v = (float)iotnas_decode_int(code) * iotnas_scale(e->scale_offset + i / (e->count / e->n_scales));
#endif
            uint32_t bits;
            memcpy(&bits, &v, 4);
            printf("%08x\n", bits);
        }
    }
    return 0;
}
"""


@pytest.mark.parametrize("fmt", ["e4m3", "e3m2fn", "int4"])
def test_c_header_decodes_the_same_values(exports, tmp_path, fmt):
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler found (cc or gcc) to build the header check")
    shutil.copy(exports[fmt] / "model.h", tmp_path / "model.h")
    (tmp_path / "main.c").write_text(C_PROGRAM)
    exe = tmp_path / "decode"
    subprocess.run([compiler, "-std=c99", "-O1", "-ffp-contract=off", "-Wall", "-Werror", "-o", str(exe),
                    str(tmp_path / "main.c"), "-lm"], check=True, capture_output=True)
    printed = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split()
    _, state = read_packed(exports[fmt])
    expected = torch.cat([t.float().reshape(-1) for t in state.values()]).numpy().view(np.uint32)
    assert [int(h, 16) for h in printed] == expected.tolist()


def test_cli_export_prints_sizes(cli, trained_store, tmp_path, shared_data):
    code, out, err = cli("export", str(trained_store), MODEL, "--format", "e5m2", "--out", str(tmp_path / "x"),
                         "--images", "32", "--no-tflite", "--json")  # model_int8.tflite: test_tflite.py
    assert code == 0, err
    result = json.loads(out)
    assert result["files"]["weights.bin"] == result["weight_bytes"] == math.ceil(result["n_values"] * 8 / 8)
    assert result["weight_bytes"] < result["promised_bytes"]
    assert result["files"]["model.onnx"] == result["onnx_bytes"]
    assert result["onnx_check"]["images"] == 32 and result["opset"] == OPSET


def test_export_after_the_study_folder_moved(cli, trained_store, tmp_path):
    moved, original = tmp_path / "moved-study", trained_store.parent
    shutil.copytree(original, moved)
    original.rename(original.with_name(original.name + "-away"))  # nothing may still point at the old place
    try:
        code, out, err = cli("export", str(moved / trained_store.name), MODEL, "--out", str(tmp_path / "x"),
                             "--images", "8", "--no-tflite", "--json")
    finally:
        original.with_name(original.name + "-away").rename(original)
    assert code == 0, err
    assert json.loads(out)["onnx_check"]["images"] == 8


# ------------------------------------------------------------------ bad input


def _no_leftovers(folder: Path, before: set[str]) -> None:
    assert {p.name for p in folder.iterdir()} == before


def test_unknown_model_key(cli, trained_store, tmp_path):
    code, _, err = cli("export", str(trained_store), "densenet/s1/5", "--out", str(tmp_path / "out"))
    assert code == 2
    assert "densenet/s1/5 was not trained" in err and MODEL in err
    _no_leftovers(tmp_path, set())
    code, _, err = cli("export", str(trained_store), "nonsense", "--out", str(tmp_path / "out"))
    assert code == 2 and "not a model key" in err
    _no_leftovers(tmp_path, set())


def test_store_without_trained_models(cli, tmp_path):
    Store.open(str(tmp_path / "empty.db"), study_name="empty").close()
    code, _, err = cli("export", str(tmp_path / "empty.db"), MODEL, "--out", str(tmp_path / "out"))
    assert code == 2 and "holds no trained model" in err
    _no_leftovers(tmp_path, {"empty.db"} | {p.name for p in tmp_path.iterdir() if p.name.startswith("empty.db-")})


def test_unknown_format(cli, trained_store, tmp_path):
    code, _, err = cli("export", str(trained_store), MODEL, "--format", "e9m9", "--out", str(tmp_path / "out"))
    assert code == 2 and "exp_bits" in err
    _no_leftovers(tmp_path, set())


def test_unwritable_or_taken_output(cli, trained_store, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    code, _, err = cli("export", str(trained_store), MODEL, "--out", str(tmp_path / "taken"))
    assert code == 2 and "already exists" in err
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["keep.txt"]
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.access(locked, os.W_OK):  # root ignores permissions: use a folder no one may write to
        locked = Path("/proc/1")
    code, _, err = cli("export", str(trained_store), MODEL, "--out", str(locked / "out"))
    assert code == 2 and "not writable" in err
    assert not (locked / "out").exists()
    code, _, err = cli("export", str(trained_store), MODEL, "--out", str(tmp_path / "missing" / "out"))
    assert code == 2 and "does not exist" in err
    _no_leftovers(tmp_path, {"taken", "locked"})


def test_wrong_check_dataset(cli, trained_store, tmp_path):
    code, _, err = cli("export", str(trained_store), MODEL, "--out", str(tmp_path / "out"), "--data", "digits")
    assert code == 2 and "trained on cifar10, not digits" in err
    _no_leftovers(tmp_path, set())
    code, _, err = cli("export", str(trained_store), MODEL, "--out", str(tmp_path / "out"), "--check-data", "digits")
    assert code == 2 and "(10 classes, 1 channels) is not the one" in err
    _no_leftovers(tmp_path, set())


def test_same_name_other_images_need_check_data(trained_store, cifar_small, tmp_path):
    other = cifar_small.subset(train=100)  # cifar10 by name, but not the images the model was trained on
    with Store.open(str(trained_store), read_only=True) as store:
        with pytest.raises(ExportError, match="n_train, mean, std differ.*--check-data"):
            export_model(store, MODEL, out_dir=tmp_path / "a", dataset=other, check_images=8)
        assert not (tmp_path / "a").exists()
        result = export_model(store, MODEL, out_dir=tmp_path / "b", check_dataset=other, check_images=8, tflite=False)
    assert result.onnx_check.images == 8


def test_no_key_exports_the_winner_in_its_format(cli, trained_store, tmp_path):
    code, out, err = cli("export", str(trained_store), "--out", str(tmp_path / "w"), "--images", "8", "--no-tflite",
                         "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["model_key"] == MODEL and result["format_name"] == "float32"  # no precision stage: float32
    assert result["forced"] == []


def test_a_format_model_onnx_cannot_store_is_refused(cli, trained_store, tmp_path):
    code, _, err = cli("export", str(trained_store), MODEL, "--format", "tf32", "--out", str(tmp_path / "out"))
    assert code == 2 and "tf32 (19 bits) cannot be stored in model.onnx" in err
    assert len(err.strip().splitlines()) == 1
    _no_leftovers(tmp_path, set())


@pytest.mark.parametrize("statement, needle", [
    ("UPDATE iotnas_study_meta SET value = json_set(value, '$.constraints.max_weight_bytes', 100) WHERE key = 'study'",
     "over the study's limits (4480 weight bytes > 100)"),
    ("UPDATE iotnas_trainings SET accuracy = 0.1", "at chance level (10.0% on 10 classes)"),
], ids=["over-budget", "chance-level"])
def test_over_budget_or_chance_level_needs_force(cli, trained_store, tmp_path, statement, needle):
    db = _edited_copy(trained_store, tmp_path, statement)
    err = _export_fails(cli, db, tmp_path / "x")
    assert needle in err and "--force" in err
    code, out, err = cli("export", str(db), MODEL, "--out", str(tmp_path / "x"), "--images", "8", "--force",
                         "--no-tflite", "--json")
    assert code == 0, err
    assert any(needle.split(" (")[0] in why for why in json.loads(out)["forced"])
    assert "exported with --force" in (tmp_path / "x" / "MODEL_CARD.md").read_text()


def _edited_copy(trained_store: Path, tmp_path: Path, statement: str, *params: str) -> Path:
    """A copy of the study's folder whose store was changed behind iotnas's back (``{db}``: the copy's path)."""
    import sqlite3

    folder = tmp_path / "edited"
    shutil.copytree(trained_store.parent, folder)
    db = folder / trained_store.name
    with sqlite3.connect(db) as connection:
        connection.execute(statement, [p.format(db=db) for p in params])
    connection.close()
    return db


def _export_fails(cli, db: Path, out: Path) -> str:
    code, _, err = cli("export", str(db), MODEL, "--out", str(out), "--images", "8")
    assert code == 2 and err.startswith("iotnas: error:") and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
    return err


@pytest.mark.parametrize("target", ["{db}", "{folder}", "{folder}/notes.txt", "../../../../../../etc/hostname"],
                         ids=["the-store", "a-folder", "a-text-file", "outside"])
def test_a_checkpoint_path_pointing_elsewhere_is_one_clear_line(cli, trained_store, tmp_path, target):
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    db = _edited_copy(trained_store, tmp_path, "UPDATE iotnas_trainings SET checkpoint = ?",
                      target.replace("{folder}", str(tmp_path)))
    assert f"the checkpoint of {MODEL} cannot be used" in _export_fails(cli, db, tmp_path / "x")


@pytest.mark.parametrize("statement, needle", [
    ("UPDATE iotnas_study_meta SET value = '{not json' WHERE key = 'study'", "the recorded study cannot be read"),
    ("UPDATE iotnas_trainings SET accuracy = 'high'", f"accuracy of {MODEL} is 'high', not a number"),
], ids=["study", "accuracy"])
def test_an_edited_value_in_the_store_is_one_clear_line(cli, trained_store, tmp_path, statement, needle):
    db = _edited_copy(trained_store, tmp_path, statement)
    assert needle in _export_fails(cli, db, tmp_path / "x")


def test_export_into_a_store_or_a_file_is_refused(cli, trained_store, tmp_path):
    before = trained_store.read_bytes()
    code, _, err = cli("export", str(trained_store), MODEL, "--out", str(trained_store))
    assert code == 2 and "is a file, not a folder" in err
    assert trained_store.read_bytes() == before
