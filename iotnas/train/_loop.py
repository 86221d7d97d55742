"""The training loop: budgets, schedule, checkpoints, resume; and evaluation."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from iotnas.data import Dataset
from iotnas.errors import CheckpointError, InputSizeError, TrainingError
from iotnas.train import _checkpoint
from iotnas.train._allocator import keep_freed_memory
from iotnas.train._augment import flip, normalize, random_crop
from iotnas.train._config import EpochStats, TrainConfig, TrainResult
from iotnas.train._schedule import Plan

log = logging.getLogger(__name__)

Callback = Callable[[EpochStats], None]
EVAL_BATCH = 1000  # images per forward pass at evaluation; bounded memory, large enough to be fast


def train(
    model: nn.Module,
    dataset: Dataset,
    config: TrainConfig = TrainConfig(),
    *,
    checkpoint_dir: Path | str | None = None,
    resume: bool = True,
    callbacks: Sequence[Callback] = (),
    seed: int = 0,
    meta: dict | None = None,
    device: str | torch.device | None = None,
    teacher: nn.Module | None = None,
) -> TrainResult:
    """Train ``model`` in place for ``config.epochs`` epochs and return its test accuracy.

    With ``checkpoint_dir``, the state is saved atomically to ``checkpoint_dir/checkpoint.pt`` after
    every epoch and at the end. With ``resume`` and a checkpoint there, training continues from it:
    with the same budget it reaches exactly the weights of an uninterrupted run with the same seed;
    with a larger budget it continues the trained model (see :mod:`iotnas.train._schedule`); with a
    budget already reached it only evaluates. All randomness (shuffling, augmentation, dropout) is
    drawn from generators seeded by ``(seed, epoch, step)``, never from the global seed. On the CPU
    the process keeps freed memory for reuse from then on (:func:`keep_freed_memory`): each step
    would otherwise fault its activations in afresh.

    Args:
        meta: stored in the checkpoint so the model can be rebuilt, e.g. ``{"arch": arch.to_json()}``.
        device: where to train; default CUDA when available, else the CPU.
        teacher: a trained model of the same classes whose softened outputs the student learns from
            (knowledge distillation), with ``config.distill_weight`` of the loss; needed exactly when
            that weight is above 0. It is only run, never changed. A checkpoint does not record which
            teacher it was trained with: resume with the same one.

    Raises:
        InputSizeError: the model cannot take the dataset's images or has the wrong number of outputs.
        CheckpointError: the checkpoint belongs to another model, dataset, seed or recipe.
    """
    device = _pick_device(device)
    config = _safe_layout(config, model, device)
    if device.type == "cpu":
        keep_freed_memory()
    started = time.perf_counter()
    ckpt_path = Path(checkpoint_dir) / _checkpoint.FILE_NAME if checkpoint_dir is not None else None
    if (teacher is not None) != (config.distill_weight > 0):
        raise TrainingError("distill_weight above 0 needs a teacher model, and a teacher needs distill_weight above 0"
                            f" (distill_weight {config.distill_weight}, teacher {'given' if teacher else 'none'})")
    with _threads(config.threads), _forked_rng(device):
        model.to(device)
        check_model_input(model, dataset, device=device)
        distill = _Distiller(teacher, config, dataset, device) if teacher is not None else None
        check_batches(dataset, config)
        n_train = len(dataset.train_labels)
        spe = n_train // config.batch_size  # full batches per epoch; the remainder changes every epoch
        total = max(1, round(config.epochs * spe))
        warmup = config.warmup_steps(total, spe)
        fingerprint = _fingerprint(dataset)
        optimizer = _optimizer(model, config)
        ema = _Ema(model, config.ema_decay) if config.ema_decay > 0 else None
        step, plan = 0, Plan(0, 0.0, total, warmup, config.lr)
        if ckpt_path is not None and resume and ckpt_path.is_file():
            ckpt = _checkpoint.load(ckpt_path)
            config = _legacy_warmup(ckpt, config)
            warmup = config.warmup_steps(total, spe)
            _check_compatible(ckpt, ckpt_path, config, fingerprint, seed, spe)
            _restore(model, optimizer, ema, ckpt, ckpt_path)
            step = ckpt.step
            plan = Plan(**ckpt.plan)
            if total > plan.total_steps:  # continue to a larger budget: re-plan the decay from here
                plan = Plan(step, plan.lr(step - 1) if step else 0.0, total, warmup, config.lr)
                log.info("continuing from %.2f to %.2f epochs", step / spe, total / spe)
            elif total < plan.total_steps:
                total = max(total, step)  # a smaller budget than planned: stop there (schedule unchanged)
            else:
                log.info("resuming at %.2f of %.2f epochs", step / spe, total / spe)
        resumed_from = step / spe
        if config.channels_last:
            model.to(memory_format=torch.channels_last)
        flips = config.flip if config.flip is not None else dataset.flip_ok
        data = _Batches(dataset, config, spe, seed, flips, device)
        criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        history: list[EpochStats] = []
        images_seen, train_seconds = 0, 0.0
        accuracy: float | None = None

        while step < total:
            epoch = step // spe
            epoch_end = min(total, (epoch + 1) * spe)
            t0 = time.perf_counter()
            model.train()
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), dtype=torch.int64, device=device)
            seen = 0
            for x, y in data.epoch(epoch, first=step - epoch * spe, last=epoch_end - epoch * spe):
                _seed_step(seed, step)
                for group in optimizer.param_groups:
                    group["lr"] = plan.lr(step)
                out = model(x)
                loss = criterion(out, y) if distill is None else distill.loss(out, x, y, criterion)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if ema is not None:
                    ema.update(model, step)
                loss_sum += loss.detach() * len(y)
                correct += (out.detach().argmax(1) == y).sum()
                seen += len(y)
                step += 1
            if not math.isfinite(float(loss_sum)):
                raise TrainingError(f"the training loss diverged (not finite) in epoch {epoch + 1}; lower lr (now {config.lr})")
            t_train = time.perf_counter() - t0
            images_seen += seen
            train_seconds += t_train
            at_end = step >= total
            accuracy = None
            if at_end or (config.eval_every and (epoch + 1) % config.eval_every == 0):
                accuracy = _evaluate_state(model, ema, dataset, config, device)
            if ckpt_path is not None:
                _checkpoint.save(ckpt_path, _snapshot(model, optimizer, ema, step, spe, plan, seed, config, fingerprint, meta, accuracy))
            stats = EpochStats(
                epoch=epoch + 1,
                epochs_done=step / spe,
                total_epochs=total / spe,
                loss=float(loss_sum) / max(1, seen),
                train_accuracy=int(correct) / max(1, seen),
                test_accuracy=accuracy,
                images_per_s=seen / t_train if t_train > 0 else 0.0,
                seconds=time.perf_counter() - t0,
                lr=plan.lr(step - 1),
                resumed_from_epochs=resumed_from,
            )
            history.append(stats)
            for callback in callbacks:
                callback(stats)

        if accuracy is None:  # nothing left to train: evaluate what the checkpoint holds
            accuracy = _evaluate_state(model, ema, dataset, config, device)
        if ema is not None:
            model.load_state_dict(ema.state_dict())
        if config.channels_last:
            model.to(memory_format=torch.contiguous_format)
    return TrainResult(
        test_accuracy=accuracy,
        epochs_done=step / spe,
        steps_done=step,
        resumed_from_epochs=resumed_from,
        seconds=time.perf_counter() - started,
        images_per_s=images_seen / train_seconds if train_seconds > 0 else 0.0,
        history=tuple(history),
        checkpoint=ckpt_path,
    )


def check_batches(dataset: Dataset, config: TrainConfig) -> None:
    """Refuse a training split smaller than one batch: an epoch would be no step at all.

    Raises:
        TrainingError: naming the sizes.
    """
    n_train = len(dataset.train_labels)
    if n_train < config.batch_size:
        raise TrainingError(f"{dataset.name} has {n_train} training image(s), fewer than one batch of "
                            f"{config.batch_size}; train on more images or lower batch_size")


def _strided_pointwise(model: nn.Module) -> list[str]:
    """The 1x1 convolutions with a stride above 1 (ResNet-style shortcuts), by module name."""
    return [name for name, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and max(m.stride) > 1]


def _safe_layout(config: TrainConfig, model: nn.Module, device: torch.device) -> TrainConfig:
    """``config`` without channels_last where PyTorch's CPU kernels cannot train the model in it.

    The backward pass of a strided 1x1 convolution in NHWC on the CPU corrupts the heap for some
    channel counts (3 -> 12, 6 -> 20: "double free or corruption", or a step that takes minutes),
    so such models train in the default layout; the forward pass, and so evaluation, is unaffected.
    """
    if not config.channels_last or device.type != "cpu":
        return config
    unsafe = _strided_pointwise(model)
    if not unsafe:
        return config
    log.info("training in NCHW: strided 1x1 convolutions (%s) cannot be trained in channels_last on the CPU",
             ", ".join(unsafe[:3]))
    return dataclasses.replace(config, channels_last=False)


def evaluate(
    model: nn.Module,
    dataset: Dataset,
    *,
    tta: bool = False,
    device: str | torch.device | None = None,
    channels_last: bool = False,
    normalization: tuple[Sequence[float], Sequence[float]] | None = None,
    threads: int | None = None,
) -> float:
    """Fraction of the test split that ``model`` classifies right (eval mode, no gradients).

    ``tta`` averages the logits for each image and its mirror image; it applies only where the
    dataset allows horizontal flips and is ignored (with a log message) elsewhere.
    ``normalization`` is the per-channel (mean, std) on the 0-255 scale the model was trained
    with (a checkpoint's ``dataset["mean"]``, ``dataset["std"]``); default: this dataset's train split.
    ``threads`` sets torch's intra-op threads for this call (``None``: keep the process setting).

    Raises:
        InputSizeError: the model cannot take the dataset's images.
    """
    device = _pick_device(device)
    model.to(device)
    check_model_input(model, dataset, device=device)
    if tta and not dataset.flip_ok:
        log.info("test-time flips skipped: %s images are not mirror-symmetric", dataset.name)
        tta = False
    if normalization is None:
        mean, std = dataset.channel_mean.to(device), dataset.channel_std.to(device)
    else:
        mean, std = (torch.tensor(v, dtype=torch.float32, device=device) for v in normalization)
    was_training = model.training
    model.eval()
    correct = 0
    with _threads(threads) if threads is not None else contextlib.nullcontext(), torch.inference_mode():
        for start in range(0, len(dataset.test_labels), EVAL_BATCH):
            images = dataset.test_images[start : start + EVAL_BATCH].to(device)
            x = normalize(images, mean, std, channels_last=channels_last)
            logits = model(x)
            if tta:
                logits = logits + model(x.flip(3))
            correct += int((logits.argmax(1).cpu() == dataset.test_labels[start : start + EVAL_BATCH]).sum())
    model.train(was_training)
    return correct / len(dataset.test_labels)


def check_model_input(model: nn.Module, dataset: Dataset, *, device: torch.device | str = "cpu") -> None:
    """Fail early, with a clear message, when the model cannot classify the dataset's images.

    Raises:
        InputSizeError: a forward pass on two test images fails, or gives the wrong number of outputs.
    """
    shape = f"{dataset.in_channels}x{dataset.image_size}x{dataset.image_size}"
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            out = model(normalize(dataset.test_images[:2].to(device), dataset.channel_mean.to(device), dataset.channel_std.to(device)))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputSizeError(
            f"the model cannot take {dataset.name} images ({shape}): {first}; "
            f"build it with in_channels={dataset.in_channels} for this dataset"
        ) from exc
    finally:
        model.train(was_training)
    if out.dim() != 2 or out.shape[1] != dataset.num_classes:
        raise InputSizeError(
            f"the model gives {tuple(out.shape[1:])} outputs per image but {dataset.name} has "
            f"{dataset.num_classes} classes; build it with num_classes={dataset.num_classes}"
        )


class _Batches:
    """Shuffled, augmented, normalised training batches; a pure function of (seed, epoch, step)."""

    def __init__(self, dataset: Dataset, config: TrainConfig, spe: int, seed: int, flips: bool, device: torch.device):
        self.images = dataset.train_images.to(device)
        self.labels = dataset.train_labels.to(device)
        self.mean, self.std = dataset.channel_mean.to(device), dataset.channel_std.to(device)
        self.config, self.spe, self.seed, self.flips, self.device = config, spe, seed, flips, device
        if flips and config.alternating_flip:  # each image starts flipped or not at random, then alternates
            base = torch.Generator().manual_seed(_derive(seed, 1))
            self.flip_base = torch.rand(len(self.labels), generator=base) < 0.5

    def epoch(self, epoch: int, *, first: int, last: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches ``first .. last-1`` of ``epoch``."""
        n, bs = len(self.labels), self.config.batch_size
        order = torch.randperm(n, generator=torch.Generator().manual_seed(_derive(self.seed, 2, epoch)))
        gen = torch.Generator()
        for k in range(first, last):
            index = order[k * bs : (k + 1) * bs] if n >= bs else order
            gen.manual_seed(_derive(self.seed, 3, epoch * self.spe + k))
            images = random_crop(self.images[index.to(self.device)], self.config.crop_padding, gen)
            if self.flips:
                if self.config.alternating_flip:
                    mask = self.flip_base[index] ^ bool(epoch % 2)
                else:
                    mask = torch.rand(len(index), generator=gen) < 0.5
                images = flip(images, mask)
            x = normalize(images, self.mean, self.std, channels_last=self.config.channels_last)
            yield x, self.labels[index.to(self.device)]


class _Ema:
    """Exponential moving average of the float state (weights and BatchNorm statistics).

    The decay ramps up as ``min(decay, (1 + t) / (10 + t))`` after ``t`` steps, so that the
    random initial weights do not dominate the average of a short training (measured: a fixed
    0.99 over 128 steps left the average at chance accuracy).
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.state[k].lerp_(v, 1.0 - decay)
            else:
                self.state[k].copy_(v)

    def state_dict(self) -> dict:
        return self.state

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            self.state[k].copy_(v)


class _Distiller:
    """The loss against a teacher: ``(1 - w) * task loss + w * T^2 * KL(teacher || student)`` on outputs
    softened by temperature T (Hinton et al., 2015); T^2 keeps the soft term's gradients at the hard
    term's scale."""

    def __init__(self, teacher: nn.Module, config: TrainConfig, dataset: Dataset, device: torch.device):
        teacher.to(device)
        check_model_input(teacher, dataset, device=device)  # it must classify the same images into the same classes
        if config.channels_last:
            teacher.to(memory_format=torch.channels_last)
        self.teacher = teacher.eval()
        self.weight = config.distill_weight
        self.temperature = config.distill_temperature

    def loss(self, out: torch.Tensor, x: torch.Tensor, y: torch.Tensor, criterion: nn.Module) -> torch.Tensor:
        with torch.no_grad():
            soft = torch.softmax(self.teacher(x) / self.temperature, dim=1)
        student = torch.log_softmax(out / self.temperature, dim=1)
        kl = nn.functional.kl_div(student, soft, reduction="batchmean") * self.temperature**2
        return (1 - self.weight) * criterion(out, y) + self.weight * kl


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.SGD:
    """SGD-Nesterov; weight decay only on conv and linear weights (tensors of 2 or more dimensions)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0)


def _evaluate_state(model: nn.Module, ema: _Ema | None, dataset: Dataset, config: TrainConfig, device) -> float:
    if ema is None:
        return evaluate(model, dataset, tta=config.tta, device=device, channels_last=config.channels_last)
    raw = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(ema.state_dict())
    try:
        return evaluate(model, dataset, tta=config.tta, device=device, channels_last=config.channels_last)
    finally:
        model.load_state_dict(raw)


def _fingerprint(dataset: Dataset) -> dict:
    return {
        "name": dataset.name,
        "n_train": len(dataset.train_labels),
        "num_classes": dataset.num_classes,
        "in_channels": dataset.in_channels,
        "mean": dataset.channel_mean.tolist(),
        "std": dataset.channel_std.tolist(),
    }


#: Recipe settings added after checkpoints were written, at the value those checkpoints trained with.
_RECIPE_ADDED_LATER = {"distill_weight": 0.0, "distill_temperature": TrainConfig.distill_temperature}


def _check_compatible(ckpt, path: Path, config: TrainConfig, fingerprint: dict, seed: int, spe: int) -> None:
    def fail(what: str) -> CheckpointError:
        return CheckpointError(f"{path}: {what}; train into another folder, or start over (resume=False; 'iotnas train --overwrite')")

    if ckpt.seed != seed:
        raise fail(f"written with seed {ckpt.seed}, not {seed}")
    mine = {k: fingerprint[k] for k in ("name", "n_train", "num_classes", "in_channels")}
    theirs = {k: ckpt.dataset.get(k) for k in mine}
    if mine != theirs:
        raise fail(f"trained on {theirs}, not on {mine}")
    old = ckpt.config
    legacy = {"warmup_fraction": 0.0} if "warmup_fraction" not in old else {}  # a fixed warm-up: _legacy_warmup
    written = {**_RECIPE_ADDED_LATER, **old, **legacy}  # a checkpoint from before a setting existed trained without it
    changed = [f"{k}: {written.get(k)!r} -> {getattr(config, k)!r}" for k in TrainConfig.RECIPE
               if written.get(k) != getattr(config, k)]
    if changed:
        raise fail(f"written under another recipe ({', '.join(changed)})")
    if ckpt.steps_per_epoch != spe:
        raise fail(f"{ckpt.steps_per_epoch} steps per epoch, not {spe}")


def _legacy_warmup(ckpt, config: TrainConfig) -> TrainConfig:
    """A checkpoint written before warm-up became a fraction of the budget continues under its fixed warm-up.

    Its plan was made with ``warmup_epochs``; continuing it to a higher fidelity with the same rule
    keeps a study started by an earlier version resumable under its own recipe.
    """
    old = ckpt.config
    fixed = old.get("warmup_epochs") is not None and old.get("warmup_fraction", 0.0) == 0.0
    if not fixed or config.warmup_epochs is not None or config.warmup_fraction != TrainConfig.warmup_fraction:
        return config
    return dataclasses.replace(config, warmup_epochs=float(old["warmup_epochs"]), warmup_fraction=0.0)


def _restore(model: nn.Module, optimizer, ema: _Ema | None, ckpt, path: Path) -> None:
    try:
        model.load_state_dict(ckpt.model)
        optimizer.load_state_dict(ckpt.optimizer)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path}: holds another model's weights ({str(exc).splitlines()[0]}); train into another folder") from exc
    if ema is not None and ckpt.ema is not None:
        ema.load_state_dict(ckpt.ema)


def _snapshot(model, optimizer, ema, step, spe, plan, seed, config, fingerprint, meta, accuracy) -> _checkpoint.Checkpoint:
    return _checkpoint.Checkpoint(
        model={k: v.detach().clone().contiguous() for k, v in model.state_dict().items()},
        optimizer=optimizer.state_dict(),
        ema={k: v.clone() for k, v in ema.state_dict().items()} if ema is not None else None,
        step=step,
        steps_per_epoch=spe,
        plan=plan.to_dict(),
        seed=seed,
        config=config.to_dict(),
        dataset=fingerprint,
        meta=dict(meta or {}),
        test_accuracy=accuracy,
    )


def _derive(seed: int, *path: int) -> int:
    """A 63-bit seed for one stream (shuffle, augmentation, dropout) at one epoch or step."""
    return int(np.random.SeedSequence([seed, *path]).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


def _seed_step(seed: int, step: int) -> None:
    """Seed the (forked, see _forked_rng) global generator that layers such as dropout draw from."""
    torch.manual_seed(_derive(seed, 4, step))


@contextlib.contextmanager
def _forked_rng(device: torch.device):
    """Let training seed the global generators without changing them for the caller."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if device.type == "cuda" else "cuda"):
        yield


def default_threads() -> int:
    """Every core this process may use; one thread when other processes already keep them busy.

    Measured on a shared 2-core machine (BENCHMARKS.md, ## Training): with the load average
    above the core count, two threads ran 2.4x slower than one (every operator waits for the
    slowest thread), while on an idle machine two threads are faster.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    threads = 1 if busy >= cores else cores
    log.info("training with %d torch thread(s): %d cores, load average %.1f", threads, cores, busy)
    return threads


@contextlib.contextmanager
def _threads(threads: int | None):
    """Set torch's intra-op threads for the duration of training (see default_threads), then restore."""
    if threads is None:
        threads = default_threads()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _pick_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
