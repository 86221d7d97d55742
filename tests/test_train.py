"""The trainer: batch augmentation, schedule, checkpoints, exact resume, continuation, errors."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from iotnas.data import load_dataset
from iotnas.errors import CheckpointError, InputSizeError, TrainingError
from iotnas.train import EpochStats, TrainConfig, evaluate, load_checkpoint, train
from iotnas.train._augment import flip, normalize, random_crop
from iotnas.train._schedule import Plan


class Tiny(nn.Module):
    """A small CNN with BatchNorm and dropout, so resume must restore buffers and dropout draws."""

    def __init__(self, in_channels: int = 1, classes: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 16, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.drop = nn.Dropout(0.1)
        self.fc = nn.Linear(32 * 4, classes)

    def forward(self, x):
        x = F.relu(self.conv2(F.relu(self.bn(self.conv(x)))))
        return self.fc(self.drop(F.adaptive_max_pool2d(x, 2).flatten(1)))


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def small(digits):
    return digits.subset(train=256, test=128)


FAST = dict(batch_size=64, lr=0.1, warmup_epochs=0.5, threads=1)


def _model(seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    return Tiny(**kw)


def test_random_crop_matches_reflect_pad_then_crop():
    gen = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    out = random_crop(images, 2, gen)
    padded = F.pad(images.float(), (2, 2, 2, 2), mode="reflect").to(torch.uint8)
    for i in range(16):  # each output is one of the 25 crops of the padded image
        crops = [padded[i, :, y : y + 32, x : x + 32] for y in range(5) for x in range(5)]
        assert any(torch.equal(out[i], c) for c in crops)
    assert not torch.equal(out, images)  # some image moved


def test_flip_mirrors_only_masked_images():
    images = torch.arange(2 * 1 * 2 * 3, dtype=torch.uint8).reshape(2, 1, 2, 3)
    out = flip(images, torch.tensor([True, False]))
    assert torch.equal(out[0], images[0].flip(-1)) and torch.equal(out[1], images[1])


def test_warm_up_is_a_fraction_of_every_budget():
    config = TrainConfig()
    assert config.warmup_steps(100, 50) == 20 and config.warmup_steps(10, 50) == 2
    assert TrainConfig(warmup_epochs=1.0).warmup_steps(100, 50) == 50  # the fixed form, as before
    with pytest.raises(TrainingError, match="warmup_fraction"):
        TrainConfig(warmup_fraction=1.0)


def test_a_one_epoch_rung_warms_up_and_decays(small):
    """A 1-epoch budget reaches its peak, then decays to near zero (a fixed 1-epoch warm-up ends at its peak)."""
    lrs = []
    config = TrainConfig(epochs=1, batch_size=16, lr=0.1, threads=1)
    result = train(_model(), small, config, callbacks=[lambda s: lrs.append(s.lr)])
    assert lrs[-1] <= 0.1 / 10 and result.epochs_done == 1.0  # 16 steps: 3 of warm-up, then down to zero
    ours = Plan(0, 0.0, 16, config.warmup_steps(16, 16), 0.1)
    fixed = Plan(0, 0.0, 16, TrainConfig(warmup_epochs=1.0).warmup_steps(16, 16), 0.1)
    assert max(ours.lr(s) for s in range(16)) == pytest.approx(0.1)
    assert ours.lr(14) < 0.01 and fixed.lr(14) > 0.09  # the fixed warm-up is still climbing at the end


def test_plan_warms_up_decays_to_zero_and_continues_coherently():
    plan = Plan(0, 0.0, 100, 10, 1.0)
    lrs = [plan.lr(s) for s in range(100)]
    assert lrs[4] == pytest.approx(0.5) and lrs[9] == pytest.approx(1.0) and lrs[-1] == 0.0
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    longer = Plan(100, lrs[-1], 300, 10, 1.0)  # continue to 3x the budget
    assert longer.lr(100) == pytest.approx(longer.fresh(101) / 10)  # ramps up from where it was
    assert longer.lr(150) == pytest.approx(Plan(0, 0.0, 300, 10, 1.0).lr(150))  # then follows a fresh 300-step run
    assert longer.lr(299) == 0.0


def test_learns_digits(digits):
    result = train(_model(), digits, TrainConfig(epochs=4, **FAST), seed=0)
    assert result.test_accuracy > 0.8
    assert result.epochs_done == 4 and len(result.history) == 4
    assert result.history[-1].loss < result.history[0].loss


def test_weight_average_learns_too(digits):
    model = _model()
    result = train(model, digits, TrainConfig(epochs=4, ema_decay=0.99, **FAST), seed=0)
    assert result.test_accuracy > 0.8  # the average, not stuck near the random initial weights
    assert result.test_accuracy == evaluate(model, digits)  # the model is left holding the average


@contextlib.contextmanager
def _torch_threads(n: int):
    """torch at ``n`` threads inside, as before after (the suite runs torch at one thread)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def test_evaluate_counts_right_answers(small):
    model = _model()
    model.eval()
    acc = evaluate(model, small)
    with torch.no_grad():
        x = (small.test_images.float() - small.channel_mean.view(1, -1, 1, 1)) / small.channel_std.view(1, -1, 1, 1)
        expected = (model(x).argmax(1) == small.test_labels).float().mean().item()
    assert acc == pytest.approx(expected)
    with _torch_threads(3):  # not 1, whatever this process started with: a leaked 1 must show
        assert evaluate(model, small, threads=1, channels_last=True) == pytest.approx(expected)
        assert torch.get_num_threads() == 3  # the thread count is set for the call only


class _Stop(Exception):
    pass


def _stop_after(epoch: int):
    def callback(stats: EpochStats) -> None:
        if stats.epoch == epoch:
            raise _Stop

    return callback


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_resume_after_interruption_gives_identical_weights(small, tmp_path: Path, ema: float):
    config = TrainConfig(epochs=3, ema_decay=ema, **FAST)
    reference = _model()
    train(reference, small, config, seed=5)

    interrupted = _model()
    with pytest.raises(_Stop):
        train(interrupted, small, config, seed=5, checkpoint_dir=tmp_path, callbacks=[_stop_after(1)])
    assert load_checkpoint(tmp_path).epochs_done == 1.0
    resumed = _model(seed=99)  # different initial weights: everything must come from the checkpoint
    result = train(resumed, small, config, seed=5, checkpoint_dir=tmp_path)
    assert result.resumed_from_epochs == 1.0 and len(result.history) == 2
    for (k, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temporaries


def test_fractional_budget_and_continuation_to_a_higher_fidelity(small, tmp_path: Path):
    spe = 256 // 64
    low = train(_model(), small, TrainConfig(epochs=1.5, **FAST), seed=1, checkpoint_dir=tmp_path)
    assert low.steps_done == round(1.5 * spe) and [s.epochs_done for s in low.history] == [1.0, 1.5]
    high = train(_model(), small, TrainConfig(epochs=3, **FAST), seed=1, checkpoint_dir=tmp_path)
    assert high.resumed_from_epochs == 1.5 and high.steps_done == 3 * spe
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt.plan["start_step"] == 6 and ckpt.plan["total_steps"] == 12
    again = train(_model(), small, TrainConfig(epochs=2, **FAST), seed=1, checkpoint_dir=tmp_path)
    assert again.history == () and again.steps_done == 12  # already beyond: evaluate only
    assert again.test_accuracy == pytest.approx(high.test_accuracy)


def test_resume_refuses_another_seed_recipe_or_model(small, tmp_path: Path):
    train(_model(), small, TrainConfig(epochs=1, **FAST), seed=1, checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointError, match="seed 1, not 2"):
        train(_model(), small, TrainConfig(epochs=2, **FAST), seed=2, checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointError, match="lr: 0.1 -> 0.05"):
        train(_model(), small, TrainConfig(epochs=2, **{**FAST, "lr": 0.05}), seed=1, checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointError, match="another model"):
        train(_Wider(), small, TrainConfig(epochs=2, **FAST), seed=1, checkpoint_dir=tmp_path)


class _Wider(Tiny):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 16, 5, stride=2, padding=2, bias=False)


def test_model_that_cannot_take_the_images(small):
    with pytest.raises(InputSizeError, match=r"cannot take digits images \(1x32x32\).*in_channels=1"):
        train(_model(in_channels=3), small, TrainConfig(epochs=1, **FAST))
    with pytest.raises(InputSizeError, match="num_classes=10"):
        evaluate(_model(classes=7), small)


def test_bad_settings_and_checkpoints(tmp_path: Path):
    with pytest.raises(TrainingError, match="epochs must be positive"):
        TrainConfig(epochs=0)
    with pytest.raises(TrainingError, match="unknown training setting"):
        TrainConfig.from_dict({"epochs": 1, "learning_rate": 0.1})
    for damaged in (b"garbage", b"half written"):  # the unpickler fails in different ways on each
        (tmp_path / "checkpoint.pt").write_bytes(damaged)
        with pytest.raises(CheckpointError, match="not a readable checkpoint"):
            load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="no checkpoint there"):
        load_checkpoint(tmp_path / "nothing")


def test_training_leaves_global_rng_and_threads_alone(small):
    model = _model()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with _torch_threads(3):  # not 1, whatever this process started with: a leaked 1 must show
        train(model, small, TrainConfig(epochs=0.25, **{**FAST, "threads": 1}))
        assert torch.get_num_threads() == 3
    assert torch.equal(torch.rand(3), expected)


def test_real_search_space_model_trains(small):
    from iotnas.arch import Arch
    from iotnas.spaces import build

    model = build(Arch.parse("mobilenetv2/s6/0"), num_classes=10, in_channels=1)
    result = train(model, small.subset(train=128, test=64), TrainConfig(epochs=1, **FAST), seed=0)
    assert 0.0 <= result.test_accuracy <= 1.0 and result.history[0].loss > 0


def test_a_resnet_with_strided_shortcuts_trains_on_the_cpu(tmp_path: Path):
    """The backward pass of a strided 1x1 convolution in channels_last corrupts the CPU heap for some
    channel counts (resnet/s5/24 on 1-channel images: a crash, or minutes per step); training falls back
    to the default layout for such models. In a subprocess, so a crash fails this test, not the run."""
    import subprocess
    import sys

    script = (
        "from iotnas.data import load_dataset\n"
        "from iotnas.spaces import build\n"
        "from iotnas.train import TrainConfig, train\n"
        "data = load_dataset('digits').subset(train=512, test=64)\n"
        "model = build('resnet/s5/24', num_classes=10, in_channels=1)\n"
        "r = train(model, data, TrainConfig(epochs=2, batch_size=64, threads=1), seed=0)\n"
        "print(r.test_accuracy)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert 0.0 <= float(done.stdout.strip()) <= 1.0


def test_a_checkpoint_from_before_fractional_warm_up_continues_under_its_fixed_warm_up(small, tmp_path):
    """A rung trained by an earlier version (fixed 1-epoch warm-up, no warmup_fraction) goes on to higher rungs."""
    import dataclasses

    from iotnas.train import _checkpoint

    base = dict(batch_size=64, lr=0.1, threads=1)
    train(_model(), small, TrainConfig(epochs=1, warmup_epochs=1.0, **base), checkpoint_dir=tmp_path)
    path = tmp_path / _checkpoint.FILE_NAME
    old = _checkpoint.load(path)
    legacy = {k: v for k, v in old.config.items() if k != "warmup_fraction"}
    _checkpoint.save(path, dataclasses.replace(old, config=legacy))
    higher = train(_model(), small, TrainConfig(epochs=2, **base), checkpoint_dir=tmp_path)
    assert higher.resumed_from_epochs == 1.0 and higher.epochs_done == 2.0
    again = train(_model(), small, TrainConfig(epochs=3, **base), checkpoint_dir=tmp_path)
    assert again.resumed_from_epochs == 2.0
    with pytest.raises(CheckpointError, match="recipe"):  # any other change of recipe is still refused
        train(_model(), small, TrainConfig(epochs=4, **{**base, "lr": 0.2}), checkpoint_dir=tmp_path)



_TRAIN_AND_COUNT_FAULTS = """
import resource, torch
from iotnas.data import Dataset
from iotnas.spaces import build
from iotnas.train import TrainConfig, train
gen = torch.Generator().manual_seed(0)
images = torch.randint(0, 256, (512, 3, 32, 32), dtype=torch.uint8, generator=gen)
labels = torch.randint(0, 10, (512,), generator=gen)
data = Dataset("random", images, labels, images[:64], labels[:64], tuple("abcdefghij"), True)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
train(build("resnext/s3/2"), data, TrainConfig(epochs=2, threads=1), seed=0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="glibc's allocator only")
def test_training_on_the_cpu_keeps_freed_memory_instead_of_faulting_it_in_every_step():
    """resnext/s3/2's activations exceed glibc's mmap threshold: without keeping freed memory, every
    step takes them from the kernel again page by page (6.5 million faults per 8,192 images)."""
    import os
    import subprocess
    import sys

    faults = {}
    for mode in ("on", "off"):  # fresh processes: the allocator's settings are the process's
        env = {**os.environ, "IOTNAS_KEEP_FREED_MEMORY": "1" if mode == "on" else "0"}  # "0": the opt-out
        done = subprocess.run([sys.executable, "-c", _TRAIN_AND_COUNT_FAULTS], capture_output=True, text=True,
                              timeout=300, check=False, env=env)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        faults[mode] = int(done.stdout.split()[-1])
    assert faults["on"] * 4 < faults["off"], faults


class _Rolled(nn.Module):
    """A teacher that answers the class after the right one: what a student learns from it is visible."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x).roll(1, dims=1)


@pytest.fixture(scope="module")
def taught(digits):
    teacher = _model(seed=1)
    assert train(teacher, digits, TrainConfig(epochs=4, **FAST), seed=0).test_accuracy > 0.8
    return teacher.eval()


def test_a_student_learns_its_teachers_answers(digits, taught):
    """With all of the loss on the teacher's outputs, the student copies them, wrong ones included."""
    teacher = _Rolled(taught)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = _model(seed=2)
    train(student, digits, TrainConfig(epochs=4, distill_weight=1.0, **FAST), seed=0, teacher=teacher)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())  # run, never trained
    assert not teacher.training
    assert evaluate(student, digits) < 0.2  # it learned the rolled answers, not the labels
    x = normalize(digits.test_images, digits.channel_mean, digits.channel_std)
    with torch.no_grad():
        agree = (student.eval()(x).argmax(1) == teacher(x).argmax(1)).float().mean()
    assert agree > 0.7


def test_distillation_needs_a_teacher_and_keeps_its_checkpoints_apart(small, taught, tmp_path: Path):
    with pytest.raises(TrainingError, match="needs a teacher"):
        train(_model(), small, TrainConfig(epochs=1, distill_weight=0.5, **FAST))
    with pytest.raises(TrainingError, match="needs a teacher"):
        train(_model(), small, TrainConfig(epochs=1, **FAST), teacher=taught)
    for bad in ({"distill_weight": 1.5}, {"distill_temperature": 0.0}):
        with pytest.raises(TrainingError, match="distill_"):
            TrainConfig(epochs=1, **bad)
    train(_model(), small, TrainConfig(epochs=1, distill_weight=0.5, **FAST), teacher=taught, checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointError, match="distill_weight: 0.5 -> 0.0"):  # not continued as a plain training
        train(_model(), small, TrainConfig(epochs=2, **FAST), checkpoint_dir=tmp_path)
    more = train(_model(), small, TrainConfig(epochs=2, distill_weight=0.5, **FAST), teacher=taught,
                 checkpoint_dir=tmp_path)
    assert more.resumed_from_epochs == 1.0


def test_a_checkpoint_from_before_distillation_continues(small, tmp_path):
    """Checkpoints written before the distillation settings existed trained without a teacher."""
    import dataclasses

    from iotnas.train import _checkpoint

    train(_model(), small, TrainConfig(epochs=1, **FAST), checkpoint_dir=tmp_path)
    path = tmp_path / _checkpoint.FILE_NAME
    old = _checkpoint.load(path)
    _checkpoint.save(path, dataclasses.replace(old, config={k: v for k, v in old.config.items()
                                                            if not k.startswith("distill_")}))
    assert train(_model(), small, TrainConfig(epochs=2, **FAST), checkpoint_dir=tmp_path).resumed_from_epochs == 1.0
