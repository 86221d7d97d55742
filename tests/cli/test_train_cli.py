"""`iotnas train` / `iotnas eval`: real runs on a small slice of the embedded digits, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

ARCH = ("mobilenetv2", "s6", "0")
QUICK = ("--data", "digits", "--subset", "96", "--batch-size", "32", "--threads", "1")


def _one_clean_line(code: int, err: str) -> None:
    assert code == 2
    assert err.startswith("iotnas: error:") and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One real training run shared by the tests of this module (the `cli` fixture is per test)."""
    import contextlib
    import io

    from iotnas.cli.main import main

    out = tmp_path_factory.mktemp("run")
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["train", *ARCH, *QUICK, "--epochs", "1", "--out", str(out), "--json"])
    assert code == 0, stderr.getvalue()
    return out, json.loads(stdout.getvalue())


def test_train_writes_a_checkpoint_that_eval_reproduces(trained, cli):
    out, result = trained
    assert (out / "checkpoint.pt").is_file() and result["epochs_done"] == 1.0
    # --subset limited the training images only: the training scored the whole test split, as eval does
    code, stdout, err = cli("eval", str(out), "--data", "digits", "--json")
    assert code == 0, err
    assert json.loads(stdout)["test_images"] == 450
    assert json.loads(stdout)["test_accuracy"] == pytest.approx(result["test_accuracy"])
    code, stdout, err = cli("eval", str(out), "--data", "digits", "--subset", "96", "--json")
    assert code == 0 and json.loads(stdout)["test_images"] == 96


def test_eval_in_a_number_format(trained, cli):
    out, _ = trained
    code, stdout, err = cli("eval", str(out / "checkpoint.pt"), "--data", "digits", "--format", "e4m3", "--json")
    assert code == 0, err
    assert json.loads(stdout)["format"] == "e4m3"


def test_resume_continues_to_a_larger_budget(trained, cli, tmp_path: Path):
    out, _ = trained
    copy = tmp_path / "run"
    copy.mkdir()
    (copy / "checkpoint.pt").write_bytes((out / "checkpoint.pt").read_bytes())
    code, stdout, err = cli("train", *ARCH, *QUICK, "--epochs", "2", "--out", str(copy), "--resume", "--json")
    assert code == 0, err
    result = json.loads(stdout)
    assert result["resumed_from_epochs"] == 1.0 and result["epochs_done"] == 2.0


def test_a_student_trains_from_a_teacher_checkpoint(trained, cli, tmp_path: Path):
    """--teacher: the student's recipe and checkpoint record the distillation; a resume needs the teacher again."""
    from iotnas.train import load_checkpoint

    teacher, _ = trained
    student = tmp_path / "student"
    code, stdout, err = cli("train", "probenet", "s2", "0", *QUICK, "--epochs", "1", "--out", str(student),
                            "--teacher", str(teacher), "--distill-weight", "0.7", "--json")
    assert code == 0, err
    assert json.loads(stdout)["epochs_done"] == 1.0
    ckpt = load_checkpoint(student)
    assert ckpt.config["distill_weight"] == 0.7 and ckpt.meta["teacher"] == str(teacher)
    code, _, err = cli("train", "probenet", "s2", "0", *QUICK, "--epochs", "2", "--out", str(student), "--resume")
    assert code == 2 and "Traceback" not in err  # after the line naming the run, the refusal
    assert err.strip().splitlines()[-1].startswith("iotnas: error:") and "distill_weight: 0.7 -> 0.0" in err
    code, _, err = cli("train", "probenet", "s2", "0", *QUICK, "--epochs", "1", "--out", str(tmp_path / "o"),
                       "--teacher", str(tmp_path / "no-such-run"))
    _one_clean_line(code, err)
    assert "no-such-run" in err


def test_existing_checkpoint_needs_resume_or_overwrite(trained, cli):
    out, _ = trained
    code, _, err = cli("train", *ARCH, *QUICK, "--epochs", "1", "--out", str(out))
    _one_clean_line(code, err)
    assert "--resume" in err


def test_wrong_path(cli, tmp_path: Path):
    code, _, err = cli("train", *ARCH, "--data", str(tmp_path / "nope"), "--epochs", "1", "--out", str(tmp_path / "o"))
    _one_clean_line(code, err)
    assert "no such file or folder" in err


def test_wrong_layout(cli, shared_data: Path, tmp_path: Path):
    code, _, err = cli("train", *ARCH, "--data", str(shared_data / "fashion-mnist"), "--layout", "cifar10-bin",
                       "--epochs", "1", "--out", str(tmp_path / "o"))  # fmt: skip
    _one_clean_line(code, err)
    assert "not in the cifar10-bin layout" in err


def test_labels_out_of_range(cli, tmp_path: Path):
    folder = tmp_path / "cifar"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        records = np.zeros((4, 3073), dtype=np.uint8)
        records[:, 0] = [0, 1, 2, 11]
        (folder / f"{name}.bin").write_bytes(records.tobytes())
    code, _, err = cli("train", *ARCH, "--data", str(folder), "--epochs", "1", "--out", str(tmp_path / "o"))
    _one_clean_line(code, err)
    assert "labels range over 0..11" in err


def test_images_the_model_cannot_take(cli, trained, tmp_path: Path, shared_data: Path):
    from PIL import Image

    for c in ("a", "b"):
        (tmp_path / "big" / c).mkdir(parents=True)
        for k in range(5):
            Image.fromarray(np.zeros((48, 48, 3), dtype=np.uint8)).save(tmp_path / "big" / c / f"{k}.png")
    code, _, err = cli("train", *ARCH, "--data", str(tmp_path / "big"), "--epochs", "1", "--out", str(tmp_path / "o"))
    _one_clean_line(code, err)
    assert "48x48" in err
    out, _ = trained  # a grey-digit model cannot classify colour CIFAR-10 images
    code, _, err = cli("eval", str(out), "--data", str(shared_data / "cifar10"), "--subset", "10")
    _one_clean_line(code, err)
    assert "cannot take cifar10 images (3x32x32)" in err


@pytest.mark.parametrize("args, needle", [
    (("--subset", "1"), "fewer than one batch"),
    (("--seed", "-1"), "--seed"),
    (("--threads", "0"), "--threads"),
])
def test_bad_training_requests_are_one_line(cli, tmp_path: Path, args, needle):
    code, _, err = cli("train", *ARCH, "--data", "digits", "--epochs", "1", "--out", str(tmp_path / "o"), *args)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
