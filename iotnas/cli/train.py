"""`iotnas train` and `iotnas eval`: train one architecture on a dataset, evaluate a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from iotnas.cli._common import console, err_console, print_json
from iotnas.cli.main import app
from iotnas.errors import ConfigError

DATA_HELP = "Dataset: a folder or .tar.gz archive (CIFAR-10, MNIST-like IDX, image folder), or 'digits'."
LAYOUT_HELP = "Dataset layout, when detection is not wanted: cifar10-bin, cifar10-python, idx, folder."


def _load(data: str, layout: Optional[str], *, train: Optional[int] = None, test: Optional[int] = None):
    from iotnas.data import load_dataset

    return load_dataset(data, layout=layout).subset(train=train, test=test)


@app.command("train")
def train_command(
    space: str = typer.Argument(..., help="Search space, e.g. mobilenetv2."),
    law: str = typer.Argument(..., help="Sampling law, e.g. s4."),
    id: int = typer.Argument(..., help="Sample id within the law."),
    data: str = typer.Option(..., "--data", help=DATA_HELP),
    epochs: float = typer.Option(..., "--epochs", help="Budget in epochs (fractional allowed)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Checkpoint folder (default: runs/SPACE-LAW-ID)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the checkpoint in --out (same or larger budget)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over even if --out holds a checkpoint."),
    layout: Optional[str] = typer.Option(None, "--layout", help=LAYOUT_HELP),
    seed: int = typer.Option(0, "--seed", min=0, max=2**63 - 1, help="Seed for shuffling and augmentation."),
    subset: Optional[int] = typer.Option(None, "--subset", min=1, help="Train on the first N training images only (as [data] limit); the test split stays whole."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Images per step."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Torch threads (default: all cores, or 1 on a busy machine)."),
    teacher: Optional[Path] = typer.Option(
        None, "--teacher", help="Learn also from this trained model's outputs (knowledge distillation): a "
        "checkpoint.pt, or its folder, of a larger model trained on the same dataset."),
    distill_weight: float = typer.Option(0.5, "--distill-weight", min=0.0, max=1.0,
                                         help="With --teacher: the share of the loss taken from the teacher."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Train one architecture, with a checkpoint every epoch; --resume continues it."""
    from iotnas.arch import Arch
    from iotnas.files import check_folder
    from iotnas.spaces import build
    from iotnas.train import TrainConfig, check_batches, load_trained, train

    arch = Arch(space, law, id)
    out = check_folder(out or Path("runs") / arch.key.replace("/", "-"), what="checkpoint folder", parents=True)
    if (out / "checkpoint.pt").is_file() and not (resume or overwrite):
        raise ConfigError(f"{out} already holds a checkpoint; pass --resume to continue it or --overwrite to start over")
    dataset = _load(data, layout, train=subset)
    overrides = {k: v for k, v in {"batch_size": batch_size, "lr": lr, "threads": threads}.items() if v is not None}
    teacher_model = load_trained(teacher).model if teacher is not None else None
    if teacher_model is not None:
        overrides["distill_weight"] = distill_weight
    config = TrainConfig(epochs=epochs, eval_every=1, **overrides)
    check_batches(dataset, config)
    model = build(arch, num_classes=dataset.num_classes, in_channels=dataset.in_channels)
    err_console.print(f"{arch.key} on {dataset.describe()}")
    with Progress(
        TextColumn("epoch"), MofNCompleteColumn(), BarColumn(), TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(), console=err_console, transient=False,
    ) as progress:  # fmt: skip
        task = progress.add_task("train", total=max(1, round(epochs)), status="")

        def show(stats) -> None:
            accuracy = f" test {stats.test_accuracy:.2%}" if stats.test_accuracy is not None else ""
            progress.update(
                task, completed=min(stats.epochs_done, epochs),
                status=f"loss {stats.loss:.3f}  train {stats.train_accuracy:.2%}{accuracy}  {stats.images_per_s:,.0f} img/s",
            )  # fmt: skip

        result = train(
            model, dataset, config, checkpoint_dir=out, resume=resume, callbacks=[show], seed=seed,
            meta={"arch": arch.to_json(), "data": data, "layout": layout,
                  **({"teacher": str(teacher)} if teacher is not None else {})},
            teacher=teacher_model,
        )  # fmt: skip
    payload = {
        "arch": arch.key,
        "dataset": dataset.name,
        "test_accuracy": result.test_accuracy,
        "epochs_done": result.epochs_done,
        "resumed_from_epochs": result.resumed_from_epochs,
        "seconds": round(result.seconds, 3),
        "images_per_s": round(result.images_per_s, 1),
        "checkpoint": str(result.checkpoint),
    }
    if json_output:
        print_json(payload)
    else:
        console.print(
            f"{arch.key}: test accuracy {result.test_accuracy:.2%} after {result.epochs_done:g} epochs "
            f"({result.seconds:.0f} s, {result.images_per_s:,.0f} img/s); checkpoint {result.checkpoint}",
            soft_wrap=True,
        )


@app.command("eval")
def eval_command(
    checkpoint: Path = typer.Argument(..., help="A checkpoint.pt written by 'iotnas train', or its folder."),
    data: str = typer.Option(..., "--data", help=DATA_HELP),
    layout: Optional[str] = typer.Option(None, "--layout", help=LAYOUT_HELP),
    tta: bool = typer.Option(False, "--tta", help="Average each image's prediction with its mirror image's."),
    number_format: Optional[str] = typer.Option(
        None, "--format", help="Evaluate with the weights stored in this number format (e.g. e4m3, bf16, int8)."
    ),
    subset: Optional[int] = typer.Option(None, "--subset", min=1, help="Use only the first N test images."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Test accuracy of a trained checkpoint on a dataset's test split."""
    from iotnas.train import evaluate, load_trained

    trained = load_trained(checkpoint)
    arch, model, ckpt = trained.arch, trained.model, trained.checkpoint
    dataset = _load(data, layout, test=subset)
    trained_on = ckpt.dataset
    normalization = (trained_on["mean"], trained_on["std"])  # as in training, whatever data is given now
    if number_format is None:
        accuracy = evaluate(model, dataset, tta=tta, normalization=normalization)
    else:
        from iotnas.export import deploy

        # the weights a device holds: BatchNorm folded, then rounded
        accuracy = evaluate(deploy(model, number_format).module, dataset, tta=tta, normalization=normalization)
    payload = {"arch": arch.key, "dataset": dataset.name, "test_images": len(dataset.test_labels),
               "test_accuracy": accuracy, "epochs_trained": ckpt.epochs_done, "tta": tta,
               "format": number_format or "float32"}  # fmt: skip
    if json_output:
        print_json(payload)
    else:
        console.print(
            f"{arch.key}: test accuracy {accuracy:.2%} on {len(dataset.test_labels)} {dataset.name} test images"
            f" (weights in {number_format or 'float32'})",
            soft_wrap=True,
        )


