"""export_model: find the trained model, write every artefact to a temporary folder, check, rename."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iotnas.arch import Arch
from iotnas.data import Dataset, load_dataset
from iotnas.errors import ArchError, CheckpointError, ConfigError, ExportError
from iotnas.export._card import model_card
from iotnas.export._cheader import c_header
from iotnas.export._choose import choose, refusals
from iotnas.export._deploy import DeployedModel, deploy
from iotnas.export._onnx import check_exportable, format_onnx
from iotnas.export._packed import load_packed, promised_bytes, write_packed
from iotnas.export._tflite import CALIBRATION_IMAGES, TensorQuantization, int8_tflite
from iotnas.export._tflite_check import TfliteCheck, check_tflite
from iotnas.export.c import CLibrary, export_c
from iotnas.files import check_folder, move_into_place
from iotnas.formats import parse_format
from iotnas.latency.runtimes import OPSET
from iotnas.store import Store, Training
from iotnas.train import load_trained

#: ONNX Runtime must match PyTorch within this fraction of max(1, largest |logit|): BatchNorm
#: folding and a different summation order change float32 results in the last bits only.
ONNX_TOLERANCE = 1e-4
IMAGE_SIZE = 32
TFLITE_FILE = "model_int8.tflite"


@dataclass(frozen=True, slots=True)
class OnnxCheck:
    images: int  # real test images compared
    max_abs_diff: float  # largest |ONNX Runtime - PyTorch| over all logits
    agreement: float  # fraction of images with the same predicted class
    tolerance: float  # allowed |difference| as a fraction of max(1, |logit|)


@dataclass(frozen=True, slots=True)
class TfliteExport:
    """``model_int8.tflite``: its size, its int8 input and output, its operators and its check."""

    file_bytes: int
    input: TensorQuantization  # NHWC int8: q = round(x / scale) + zero_point, x preprocessed as in training
    output: TensorQuantization  # int8 logits: logit = scale * (q - zero_point)
    operators: dict[str, int]  # TFLite operator -> how many
    calibration_images: int  # training images the activation ranges come from
    check: TfliteCheck


@dataclass(frozen=True, slots=True)
class ExportResult:
    model_key: str
    format_name: str
    bits: int
    n_values: int  # values of the deployed (folded) network
    promised_bytes: int  # the search's figure: the trained state dict in the format, scales included
    weight_bytes: int  # the deployed network's values in the format (weights.bin), never above promised_bytes
    onnx_bytes: int  # model.onnx
    onnx_overhead_bytes: int  # model.onnx beyond its stored weights: graph, names, shapes, decoding tables
    out_dir: Path
    files: dict[str, int]  # file name -> bytes
    onnx_check: OnnxCheck
    opset: int
    forced: tuple[str, ...] = ()  # refusals overridden with force=True
    c_library: CLibrary | None = None  # with --c: the C library's checks and device budget
    tflite: TfliteExport | None = None  # None: exported without model_int8.tflite

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out_dir"] = str(self.out_dir)
        d["forced"] = list(self.forced)
        d["c_library"] = None if self.c_library is None else self.c_library.to_dict()
        return d


def export_model(
    store: Store, model_key: str | None = None, *, format_name: str | None = None, out_dir: str | Path,
    dataset: str | Dataset | None = None, check_dataset: str | Dataset | None = None, check_images: int = 256,
    force: bool = False, c: bool = False, tflite: bool = True,
) -> ExportResult:
    """Export a trained model of ``store`` into the new folder ``out_dir``.

    Args:
        model_key: ``space/law/id`` (aliases accepted) of a model trained with a checkpoint;
            ``None``: the study's winner.
        format_name: number format of the stored weights (any name ``iotnas formats`` lists);
            ``None``: the format the study chose for the model (its winning format; float32 when
            the precision stage has not evaluated it).
        dataset: the study's dataset, to check on (a name, a path or a loaded dataset; default:
            the study's own); it must be the data the model was trained on.
        check_dataset: another dataset with the same classes and channels to check on instead,
            on purpose (say, the same images in another file).
        check_images: how many test images to compare on.
        force: export a model over the study's limits or at chance level all the same.
        c: also write ``c/``, a standalone C99 library (:mod:`iotnas.export.c`), checked with
            the host's gcc on the same images and measured for a Cortex-M4 when the Arm
            toolchain is installed. In int8 it runs the int8 TFLite model's integer arithmetic
            (built for it even without ``tflite``).
        tflite: also write ``model_int8.tflite``, the full-integer int8 model (int8 weights whatever
            ``format_name``), calibrated on training images and checked in the LiteRT interpreter.

    Raises:
        ExportError: unknown model, no trained model or checkpoint, a model over the limits or
            at chance level (without ``force``), a format ``model.onnx`` cannot store, a layer the
            int8 TFLite converter cannot emit, a dataset other than the model's, an output folder
            that exists or cannot be written, or an export that fails its checks.
        FormatError: unknown format.  DataError: the check images cannot be loaded.
    """
    if isinstance(check_images, bool) or not isinstance(check_images, int) or not 1 <= check_images <= 100_000:
        raise ExportError(f"check_images (--images): give 1 to 100,000 test images to check the export on, "
                          f"got {check_images!r}")
    if dataset is not None and check_dataset is not None:
        raise ExportError("give --data (the study's dataset) or --check-data (another set), not both")
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    chosen = choose(store, model_key, format_name)
    fmt = parse_format(chosen.format_name)
    check_exportable(fmt)
    key, training = _find_training(store, chosen.key)
    candidate = store.candidate(key)
    arch = Arch.from_json(candidate.arch_json)
    try:
        trained = load_trained(training.checkpoint, arch=arch)
    except CheckpointError as exc:
        raise ExportError(f"the checkpoint of {key} cannot be used: {exc}") from None
    model, ckpt = trained.model, trained.checkpoint
    info_ds = ckpt.dataset
    check_data = _check_dataset(store, dataset, check_dataset, info_ds)
    images = _check_images(check_data, info_ds, check_images)
    meta = store.meta()
    input_shape = (1, int(info_ds["in_channels"]), IMAGE_SIZE, IMAGE_SIZE)
    header_meta = {
        "model_key": key, "arch": arch.to_json(), "num_classes": int(info_ds["num_classes"]),
        "in_channels": int(info_ds["in_channels"]), "class_names": list(check_data.class_names),
        "input": {"height": IMAGE_SIZE, "width": IMAGE_SIZE, "mean": [float(v) for v in info_ds["mean"]],
                  "std": [float(v) for v in info_ds["std"]], "scale": "pixels 0-255, x = (pixel - mean) / std",
                  "preprocessing": preprocessing(check_data)},
    }
    deployed = deploy(model, fmt)
    refused = refusals(chosen, weight_bytes=deployed.promised_bytes,
                       peak_activation_bytes=candidate.peak_activation_bytes, num_classes=int(info_ds["num_classes"]))
    if refused and not force:
        raise ExportError(f"{key} in {fmt.name} is {'; '.join(refused)}; pass --force to export it all the same")
    with torch.no_grad():
        reference = deployed.module(images)
    onnx_file = format_onnx(deployed, input_shape=input_shape)
    int8_file = tflite_check = None
    integer_c = c and fmt.name == "int8"  # the int8 C library runs the int8 TFLite model's arithmetic
    if tflite or integer_c:
        int8_file, tflite_check = _int8_tflite(model, deployed, check_data, info_ds, images, key)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    except OSError as exc:
        raise ExportError(f"cannot create {out_dir}: {exc.strerror}") from None
    try:
        header = write_packed(tmp, deployed.module.state_dict(), fmt, meta=header_meta)
        (tmp / "model.onnx").write_bytes(onnx_file.data)
        if tflite:
            (tmp / TFLITE_FILE).write_bytes(int8_file.data)
        check = _check_onnx(onnx_file.data, images, reference)
        _check_packed(tmp, images, reference, key)
        blob = (tmp / "weights.bin").read_bytes()
        (tmp / "model.h").write_text(c_header(header, blob), encoding="utf-8")
        c_library = None if not c else export_c(
            tmp / "c", deployed, header_meta, pixels=check_data.test_images[:check_images], images=images,
            int8_model=int8_file if integer_c else None)
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        files |= {f"c/{name}": size for name, size in (c_library.files if c_library else {}).items()}
        files["MODEL_CARD.md"] = 0
        tflite_export = None if not tflite else TfliteExport(
            file_bytes=len(int8_file.data), input=int8_file.input, output=int8_file.output,
            operators=int8_file.operators, calibration_images=int8_file.calibration_images, check=tflite_check)
        info = _card_info(store, meta, key, candidate, training, arch, ckpt, header, check, files, fmt.name,
                          class_names=check_data.class_names)
        info.update(promised_bytes=deployed.promised_bytes, onnx_weight_bytes=onnx_file.weight_bytes,
                    onnx_overhead_bytes=onnx_file.overhead_bytes, onnx_table_bytes=onnx_file.table_bytes,
                    forced=list(refused), preprocessing=preprocessing(check_data),
                    c_library=None if c_library is None else c_library.to_dict(),
                    tflite=None if tflite_export is None else asdict(tflite_export))
        files["MODEL_CARD.md"] = _write_card(tmp, info)
        os.chmod(tmp, 0o755)
        move_into_place(tmp, out_dir, what="export folder", error=ExportError)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExportResult(
        model_key=key, format_name=fmt.name, bits=fmt.bits, n_values=header["n_values"],
        promised_bytes=deployed.promised_bytes, weight_bytes=promised_bytes(header), onnx_bytes=len(onnx_file.data),
        onnx_overhead_bytes=onnx_file.overhead_bytes, out_dir=out_dir, files=files, onnx_check=check, opset=OPSET,
        forced=refused, c_library=c_library, tflite=tflite_export,
    )


def _write_card(folder: Path, info: dict[str, Any]) -> int:
    """Write MODEL_CARD.md, whose own size is in its file table: settle the figure in two passes."""
    path = folder / "MODEL_CARD.md"
    for _ in range(3):
        path.write_text(model_card(info), encoding="utf-8")
        size = path.stat().st_size
        if info["files"].get("MODEL_CARD.md") == size:
            break
        info["files"]["MODEL_CARD.md"] = size
    return size


def preprocessing(dataset: Dataset) -> str:
    """How a camera image becomes the model's input, in the order the training applied it."""
    from iotnas.data import IMAGE_SIZE as SIZE

    channels = "RGB order" if dataset.in_channels == 3 else "one grey channel"
    return (f"{channels}, pixels 0-255 as stored (uint8); smaller images zero-padded (pixel value 0), centred, to "
            f"{SIZE}x{SIZE} *before* normalising; then x = (pixel - mean) / std per channel, float32, NCHW")


def _check_out_dir(out_dir: Path) -> None:
    check_folder(out_dir, what="export folder", new=True, error=ExportError)


def _find_training(store: Store, model_key: str) -> tuple[str, Training]:
    """The model's training at the highest fidelity that left a checkpoint."""
    done = store.trainings(status="done")
    if not done:
        raise ExportError(f"store {store.url} holds no trained model yet; run the search until some are trained")
    try:
        key = Arch.parse(model_key).key
    except (ArchError, ConfigError) as exc:
        raise ExportError(f"{model_key!r} is not a model key ({exc}); give one like mobilenetv2/s4/39") from None
    trained = sorted({t.arch_key for t in done})
    mine = [t for t in done if t.arch_key == key]
    if not mine:
        listing = ", ".join(trained[:8]) + (f" and {len(trained) - 8} more" if len(trained) > 8 else "")
        raise ExportError(f"model {key} was not trained in store {store.url}; trained models: {listing}")
    with_ckpt = [t for t in mine if t.checkpoint]
    if not with_ckpt:
        raise ExportError(
            f"model {key} has no checkpoint in store {store.url} (tabular studies take accuracy from the released "
            "results without training); train it in a study with mode = \"train\" to export it"
        )
    return key, max(with_ckpt, key=lambda t: t.epochs)


def _check_dataset(store: Store, dataset: str | Dataset | None, check_dataset: str | Dataset | None,
                   info: dict) -> Dataset:
    """The data to check the export on: the study's (the model's training data), or an explicit other set."""
    if check_dataset is not None:
        other = check_dataset if isinstance(check_dataset, Dataset) else load_dataset(check_dataset)
        return _same_geometry(other, info)
    if not isinstance(dataset, Dataset):
        if dataset is None:
            study = store.study()
            if study is None and info.get("name") is None:
                raise ExportError("the store does not say which dataset the model was trained on; pass --data")
            spec = study.data.dataset if study is not None else info["name"]
            resolved = study.resolve(spec) if study is not None else Path(spec)
            dataset = str(resolved) if not Path(spec).is_absolute() and resolved.exists() else spec
        dataset = load_dataset(dataset)
    trained_on = info.get("name")
    if trained_on is not None and dataset.name != trained_on:
        raise ExportError(f"the model was trained on {trained_on}, not {dataset.name}; pass --data with {trained_on} "
                          "(its test images check the export), or --check-data to check on another set on purpose")
    n_train = info.get("n_train")
    trained = dataset.subset(train=n_train) if n_train and n_train < len(dataset.train_labels) else dataset  # data.limit
    mine = _fingerprint(trained)
    changed = [k for k in ("n_train", "num_classes", "in_channels") if k in info and info[k] != mine[k]]
    changed += [k for k in ("mean", "std") if k in info and not np.allclose(info[k], mine[k], rtol=1e-4)]
    if changed:
        raise ExportError(f"dataset {dataset.name} at {dataset.source or '?'} is not the one the model was trained on "
                          f"({', '.join(changed)} differ); pass the study's dataset with --data, or --check-data to "
                          "check on another set on purpose")
    return _same_geometry(dataset, info)


def _fingerprint(dataset: Dataset) -> dict[str, Any]:
    """What a checkpoint records of its training data (see ``iotnas.train``)."""
    return {"n_train": len(dataset.train_labels), "num_classes": dataset.num_classes,
            "in_channels": dataset.in_channels, "mean": dataset.channel_mean.tolist(),
            "std": dataset.channel_std.tolist()}


def _same_geometry(dataset: Dataset, info: dict) -> Dataset:
    if dataset.num_classes != int(info["num_classes"]) or dataset.in_channels != int(info["in_channels"]):
        raise ExportError(
            f"dataset {dataset.name} ({dataset.num_classes} classes, {dataset.in_channels} channels) is not the one "
            f"the model was trained on ({info['num_classes']} classes, {info['in_channels']} channels); pass --data"
        )
    return dataset


def _check_images(dataset: Dataset, info: dict, n: int) -> torch.Tensor:
    """The first ``n`` test images, normalised as in training."""
    return _normalised(dataset.test_images[: max(1, n)], info)


def _calibration_images(dataset: Dataset, info: dict) -> torch.Tensor:
    """:data:`CALIBRATION_IMAGES` training images the model was trained on, evenly spaced, normalised as in training."""
    n_train = min(int(info.get("n_train") or len(dataset.train_labels)), len(dataset.train_labels))  # data.limit
    index = torch.linspace(0, n_train - 1, min(CALIBRATION_IMAGES, n_train)).round().long()
    return _normalised(dataset.train_images[index], info)


def _normalised(images: torch.Tensor, info: dict) -> torch.Tensor:
    x = images.float()
    mean = torch.tensor(info["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(info["std"], dtype=torch.float32).view(1, -1, 1, 1)
    return (x - mean) * (1.0 / std)  # as iotnas.train normalises


def _int8_tflite(model: torch.nn.Module, deployed: DeployedModel, dataset: Dataset, info: dict,
                 images: torch.Tensor, key: str):
    """``model_int8.tflite`` from the int8 deployed network, and its check against that network on ``images``."""
    int8 = deployed if deployed.format.name == "int8" else deploy(model, "int8")
    file = int8_tflite(int8, _calibration_images(dataset, info), description=f"iotnas {key}, full-integer int8")
    with torch.no_grad():
        emulated = int8.module(images)
    return file, check_tflite(file, images, dataset.test_labels[:len(images)], emulated)


def _check_onnx(onnx_bytes: bytes, images: torch.Tensor, reference: torch.Tensor) -> OnnxCheck:
    import onnx
    import onnxruntime as ort

    try:
        onnx.checker.check_model(onnx.load_from_string(onnx_bytes), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the ONNX file fails onnx.checker: {exc}") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    outputs = np.concatenate([session.run(None, {name: images[i:i + 1].numpy()})[0] for i in range(len(images))])
    ref = reference.numpy()
    diff = float(np.abs(outputs - ref).max())
    allowed = ONNX_TOLERANCE * max(1.0, float(np.abs(ref).max()))
    agreement = float((outputs.argmax(1) == ref.argmax(1)).mean())
    if not diff <= allowed:
        raise ExportError(f"ONNX Runtime differs from PyTorch by {diff:.3g} (allowed {allowed:.3g}); the export is wrong")
    return OnnxCheck(images=len(images), max_abs_diff=diff, agreement=agreement, tolerance=ONNX_TOLERANCE)


def _check_packed(folder: Path, images: torch.Tensor, reference: torch.Tensor, key: str) -> None:
    restored = load_packed(folder)
    with torch.no_grad():
        out = restored(images)
    if not torch.equal(out, reference):
        raise ExportError(f"the packed weights of {key} do not restore the emulated model exactly")


def _card_info(store, meta, key, candidate, training, arch, ckpt, header, check, files, fmt_name, *,
               class_names) -> dict[str, Any]:
    latency = store.latencies().get(key)
    precision = [r for r in store.precision_results() if r.arch_key == key and parse_format(r.format_name).name == fmt_name]
    return {
        "model_key": key, "space": arch.space, "law": arch.law, "arch_id": arch.id, "arch_args": arch.args,
        "class_names": list(class_names), "header": header, "onnx_check": asdict(check), "opset": OPSET, "files": files,
        "macs": candidate.macs, "flops": candidate.flops, "peak_activation_bytes": candidate.peak_activation_bytes,
        "weight_bytes": promised_bytes(header),
        "accuracy_float32": training.accuracy,
        "accuracy_format": max((r.accuracy for r in precision), default=None),
        "epochs": training.epochs, "train_seconds": training.seconds, "dataset_name": ckpt.dataset.get("name", "?"),
        "latency": None if latency is None else {"median_ms": latency.median_ms, "device_key": latency.device_key,
                                                  "source": latency.source},
        "study_name": meta.get("study_name", "?"), "created_at": meta.get("created_at", "?")[:19],
    }

