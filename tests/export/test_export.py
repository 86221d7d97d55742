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
from iotnas.precision.emulate import emulated
from iotnas.export import ONNX_TOLERANCE, OPSET, export_model, load_packed, read_packed
from iotnas.formats import parse_format, storage_bytes
from iotnas.spaces import build
from iotnas.store import Store
from iotnas.train import load_checkpoint

from .conftest import MODEL

FORMATS = ["float32", "e4m3", "e3m2fn", "int4"]  # 32, 8, 6 (values straddle bytes) and 4 bits + scales


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
            export_model(store, MODEL, format_name=fmt, out_dir=out / fmt, dataset=cifar_small, check_images=32)
    return {fmt: out / fmt for fmt in FORMATS}


@pytest.mark.parametrize("fmt", FORMATS)
def test_packed_size_is_the_promised_bytes(exports, trained_store, fmt):
    folder = exports[fmt]
    assert sorted(p.name for p in folder.iterdir()) == [
        "MODEL_CARD.md", "model.h", "model.onnx", "weights.bin", "weights.json"]
    header = json.loads((folder / "weights.json").read_text())
    with Store.open(str(trained_store), create=False) as store:
        n_values = store.candidate(MODEL).n_values
    model = _trained_model(trained_store)
    assert header["n_values"] == n_values == sum(t.numel() for t in model.state_dict().values())
    bits = parse_format(fmt).bits
    assert header["codes_bytes"] == math.ceil(n_values * bits / 8)
    # Integer formats add their per-channel scales, exactly as the format counts them.
    assert (folder / "weights.bin").stat().st_size == storage_bytes(parse_format(fmt), model)
    assert header["codes_bytes"] + header["scales_bytes"] == storage_bytes(parse_format(fmt), model)
    assert [t["name"] for t in header["tensors"]] == list(model.state_dict())


@pytest.mark.parametrize("fmt", FORMATS)
def test_packed_loader_equals_emulated_model_bit_for_bit(exports, trained_store, cifar_small, fmt):
    model = _trained_model(trained_store)
    x = _images(cifar_small, 32)
    with emulated(model, weights=fmt), torch.no_grad():
        expected = model(x)
    restored = load_packed(exports[fmt])
    with torch.no_grad():
        got = restored(x)
    assert torch.equal(got, expected)
    if fmt != "float32":  # the format really changed the weights
        with torch.no_grad():
            assert not torch.equal(model(x), expected)


@pytest.mark.parametrize("fmt", ["float32", "e4m3", "int4"])
def test_onnx_matches_pytorch_on_real_images(exports, trained_store, cifar_small, fmt):
    path = exports[fmt] / "model.onnx"
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version == OPSET
    model = _trained_model(trained_store)
    x = _images(cifar_small, 32)
    with emulated(model, weights=fmt), torch.no_grad():
        expected = model(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    got = np.concatenate([session.run(None, {name: x[i:i + 1].numpy()})[0] for i in range(len(x))])
    np.testing.assert_allclose(got, expected, rtol=0, atol=ONNX_TOLERANCE * max(1.0, float(np.abs(expected).max())))


def test_model_card_states_the_figures(exports):
    card = (exports["e4m3"] / "MODEL_CARD.md").read_text()
    header = json.loads((exports["e4m3"] / "weights.json").read_text())
    assert f"# Model card: {MODEL} in e4m3" in card
    assert f"{header['n_values']:,} bytes" in card  # 8 bits per value
    assert "opset 17" in card and "Latency" in card and "1.25 ms" in card
    assert "| Classes | 10: airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck |" in card


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
                         "--images", "32", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["files"]["weights.bin"] == result["weight_bytes"] == math.ceil(result["n_values"] * 8 / 8)
    assert result["onnx_check"]["images"] == 32 and result["opset"] == OPSET


def test_export_after_the_study_folder_moved(cli, trained_store, tmp_path):
    moved, original = tmp_path / "moved-study", trained_store.parent
    shutil.copytree(original, moved)
    original.rename(original.with_name(original.name + "-away"))  # nothing may still point at the old place
    try:
        code, out, err = cli("export", str(moved / trained_store.name), MODEL, "--out", str(tmp_path / "x"),
                             "--images", "8", "--json")
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
