"""The model card: what a person deploying the model needs to know, in Markdown."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from iotnas import __version__


def model_card(info: dict[str, Any]) -> str:
    """Markdown text from the export's facts (see ``export_model``)."""
    h, check = info["header"], info["onnx_check"]
    lat = info.get("latency")
    arch_args = json.dumps(info["arch_args"], sort_keys=True)
    rows = [
        ("Model", f"`{info['model_key']}` (space `{info['space']}`, law `{info['law']}`, id {info['arch_id']})"),
        ("Classes", f"{h['num_classes']}" + (f": {', '.join(info['class_names'])}" if info.get("class_names") else "")),
        ("Input", (f"{h['in_channels']}×{h['input']['height']}×{h['input']['width']}: {info['preprocessing']}; "
                   f"mean {_floats(h['input']['mean'])}, std {_floats(h['input']['std'])}")),
        ("Stored values", (f"{h['n_values']:,} (the deployed network: BatchNorm folded into the convolution before "
                          "it, or a per-channel scale and shift where none precedes it; then rounded to the format)")),
        ("MACs / FLOPs", f"{info['macs']:,} / {info['flops']:,} per image"),
        ("Peak activations", f"{info['peak_activation_bytes']:,} bytes (float32, batch 1)"),
        ("Number format", f"{h['format']} ({h['bits']} bits per value)"
                          + (f", scales in {h['scale_format']}" if h["scale_format"] else "")),
        ("Weight memory", (f"{info['weight_bytes']:,} bytes deployed (`weights.bin`); the search promised "
                          f"{info['promised_bytes']:,} bytes (its count over the trained network, BatchNorm "
                          "statistics included)")),
        ("`model.onnx`", (f"{info['files']['model.onnx']:,} bytes = {info['onnx_weight_bytes']:,} bytes of stored "
                         f"weights + {info['onnx_overhead_bytes']:,} bytes of graph, names, shapes and decoding "
                         f"tables ({info['onnx_table_bytes']:,} of them tables)")),
        *([("`model_int8.tflite`", _tflite_row(info["tflite"]))] if info.get("tflite") else []),
        ("Accuracy", _accuracy(info)),
        ("Training", f"{info['epochs']:g} epochs" + (f", {info['train_seconds']:.0f} s" if info.get("train_seconds") else "")
                     + f"; dataset {info['dataset_name']}"),
        ("Latency", "not measured" if lat is None else
         f"{lat['median_ms']:.3g} ms median on `{lat['device_key']}` ({lat['source']})"),
        ("Study", f"{info['study_name']} (store created {info['created_at']})"),
        *([("Forced", "exported with --force although " + "; ".join(info["forced"]))] if info.get("forced") else []),
        ("Exported", f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC by iotnas {__version__}"),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    files = "\n".join(f"| `{name}` | {size:,} | {_DESCRIBE.get(name, '')} |" for name, size in info["files"].items())
    return f"""# Model card: {info['model_key']} in {h['format']}

| | |
|---|---|
{table}

Architecture arguments: `{arch_args}`

## Files

| file | bytes | what |
|---|---:|---|
{files}

`weights.bin` holds exactly ceil({h['n_values']:,} × {h['bits']} / 8) = {h['codes_bytes']:,} bytes of packed values
{f"followed by {h['scales_bytes']:,} bytes of scales " if h['scales_bytes'] else ""}(layout in `weights.json` and in
the comment at the top of `model.h`). `iotnas.export.load_packed(folder)` rebuilds the deployed network; its outputs
equal `iotnas.export.deploy(model, "{h['format']}").module`'s bit for bit. `model.onnx` stores the same values in
{h['format']} and decodes them with standard operators (see docs/report-and-export.md).

## Preprocessing

{info['preprocessing']}. Mean {_floats(h['input']['mean'])}, std {_floats(h['input']['std'])} (0–255 scale).
Class {'labels in order: ' + ', '.join(f"{i} = {n}" for i, n in enumerate(info['class_names'])) if info.get('class_names') else 'names: not recorded'}.

## Checks made at export

- `onnx.checker` accepts `model.onnx` (opset {info['opset']}).
- ONNX Runtime against PyTorch on {check['images']} real test images: largest absolute difference of the logits
  {check['max_abs_diff']:.2e} (tolerance {check['tolerance']:.0e} × max(1, |logit|)), same predicted class for
  {check['agreement']:.2%} of images. Both run the deployed weights in {h['format']}.
- The packed weights, loaded back, give logits identical to the deployed model on the same images.
{_c_section(info)}{_tflite_check(info["tflite"]) if info.get("tflite") else ""}"""


_DESCRIBE = {
    "model.onnx": "the deployed network, each weight tensor stored in the format and decoded by the graph",
    "weights.bin": "packed weights of the deployed network",
    "weights.json": "header of the packed weights: format, tensor names, shapes, offsets",
    "model.h": "C header: packed arrays, tensor table, format constants, decoding functions",
    "MODEL_CARD.md": "this file",
    "c/iotnas_model.c": "C library: packed weights, their decoder, the static arena, the layer sequence",
    "c/iotnas_model.h": "C library: iotnas_run() and the input/output sizes",
    "c/iotnas_ops.c": "C library: the kernels (convolution, pooling, BatchNorm, addition, linear)",
    "c/iotnas_ops.h": "C library: kernel declarations and the float-format decoder",
    "c/iotnas_ops_kernels.h": "C library: the vector kernels, written once for every vector width",
    "c/iotnas_ops_avx2.c": "C library: the vector kernels compiled for AVX2, chosen at run time on x86 (empty elsewhere)",
    "c/iotnas_avx2.h": "C library: whether the processor has AVX2 (asked once at run time; x86 only)",
    "c/iotnas_int8.c": "C library: the int8 kernels (TensorFlow Lite's integer arithmetic, per-channel requantisation)",
    "c/iotnas_int8.h": "C library: int8 kernel declarations and the fixed-point requantisation",
    "c/iotnas_int8_x86.h": "C library: the x86 forms of the int8 kernels (SSE2, and AVX2 chosen at run time; other targets use the plain C ones)",
    "model_int8.tflite": "full-integer int8 TensorFlow Lite model (int8 weights and activations, int32 biases)",
}


_ARITHMETIC = {"float32": "weights decoded to float32, float32 activations",
               "int8": "int8 activations, TensorFlow Lite's integer arithmetic"}


def _c_section(info: dict[str, Any]) -> str:
    """The C library's checks and device budget (``export --c``), or nothing."""
    lib = info.get("c_library")
    if not lib:
        return ""
    check, budget = lib["check"], lib["budget"]
    lines = [
        (f"- The C library (`c/`, {_ARITHMETIC[lib['arithmetic']]}), built with `gcc -std=c99 -O2 -Wall -Wextra "
         f"-Werror`, against {check['reference']} on {check['images']} real test images: largest absolute difference "
         f"{check['max_abs_diff']:.2e} (allowed {check['allowed_abs_diff']:.2e}), same class for "
         f"{check['agreement']:.2%}."),
        "",
        "## On a microcontroller (`c/`)",
        "",
        "| | bytes |",
        "|---|---:|",
        f"| Promised weight memory | {info['weight_bytes']:,} |",
        f"| Peak activations (float32, `iotnas cost`) | {info['peak_activation_bytes']:,} |",
        f"| Static arena (liveness plan) | {lib['arena_bytes']:,} |",
        f"| Scratch (decoded weights, padded input plane, pooling row) | {lib['scratch_bytes']:,} |",
    ]
    if budget is None:
        lines.append("| Cortex-M4 flash / RAM | not measured (arm-none-eabi-gcc not installed) |")
    else:
        lines += [
            (f"| Cortex-M4 flash (text {budget['text_bytes']:,} + rodata {budget['rodata_bytes']:,} + data "
             f"{budget['data_bytes']:,}) | {budget['flash_bytes']:,} |"),
            (f"| Cortex-M4 RAM (data + bss {budget['bss_bytes']:,} + worst-case stack {budget['stack_bytes']:,}) | "
             f"{budget['ram_bytes']:,} |"),
        ]
    return "\n".join(lines) + "\n"


def _floats(values: list[float]) -> str:
    return "(" + ", ".join(f"{v:.2f}" for v in values) + ")"


def _accuracy(info: dict[str, Any]) -> str:
    parts = []
    if info.get("accuracy_float32") is not None:
        parts.append(f"{info['accuracy_float32']:.2%} in float32 (test split)")
    if info.get("accuracy_format") is not None and info["header"]["format"] != "float32":
        parts.append(f"{info['accuracy_format']:.2%} in {info['header']['format']}")
    return "; ".join(parts) or "not recorded"


def _tflite_row(t: dict[str, Any]) -> str:
    i, o = t["input"], t["output"]
    operators = ", ".join(f"{name} × {n}" for name, n in t["operators"].items())
    return (f"{t['file_bytes']:,} bytes, full-integer int8 (per-channel int8 weights of the int8 deployed network, "
            f"int32 biases, int8 activations calibrated on {t['calibration_images']} training images); input "
            f"{i['dtype']} {'×'.join(map(str, i['shape']))} NHWC, q = round(x / {i['scale']:.6g}) + {i['zero_point']} "
            f"with x preprocessed as below; output {o['dtype']} logits = {o['scale']:.6g} × (q − {o['zero_point']}); "
            f"operators: {operators}")


def _tflite_check(t: dict[str, Any]) -> str:
    c = t["check"]
    return (f"- `model_int8.tflite` in the LiteRT interpreter on {c['images']} real test images: accuracy "
            f"{c['accuracy']:.2%} against {c['int8_accuracy']:.2%} for the int8-emulated model (int8 weights, float32\n"
            f"  activations); logit correlation {c['logit_correlation']:.3f} (at least "
            f"{c['min_correlation']} required), same predicted class for {c['agreement']:.2%} of images; largest logit "
            f"difference {c['max_abs_diff']:.3g}.\n")
