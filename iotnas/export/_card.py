"""The model card: what a person deploying the model needs to know, in Markdown."""

from __future__ import annotations

import json
from datetime import datetime, timezone
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
        ("Input", f"{h['in_channels']}×{h['input']['height']}×{h['input']['width']}, "
                  f"x = (pixel − mean) / std per channel, pixels 0–255; mean {_floats(h['input']['mean'])}, "
                  f"std {_floats(h['input']['std'])}"),
        ("Stored values", f"{h['n_values']:,} (every state-dict tensor, BatchNorm statistics included)"),
        ("MACs / FLOPs", f"{info['macs']:,} / {info['flops']:,} per image"),
        ("Peak activations", f"{info['peak_activation_bytes']:,} bytes (float32, batch 1)"),
        ("Number format", f"{h['format']} ({h['bits']} bits per value)"
                          + (f", scales in {h['scale_format']}" if h["scale_format"] else "")),
        ("Weight memory", f"{info['weight_bytes']:,} bytes"),
        ("Accuracy", _accuracy(info)),
        ("Training", f"{info['epochs']:g} epochs" + (f", {info['train_seconds']:.0f} s" if info.get("train_seconds") else "")
                     + f"; dataset {info['dataset_name']}"),
        ("Latency", "not measured" if lat is None else
         f"{lat['median_ms']:.3g} ms median on `{lat['device_key']}` ({lat['source']})"),
        ("Study", f"{info['study_name']} (store created {info['created_at']})"),
        ("Exported", f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by iotnas {__version__}"),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    files = "\n".join(
        f"| `{name}` | {size:,} | {_DESCRIBE.get(name, '')} |" if name != "MODEL_CARD.md" else
        f"| `{name}` | – | {_DESCRIBE[name]} |"
        for name, size in info["files"].items()
    )
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
the comment at the top of `model.h`). `iotnas.export.load_packed(folder)` rebuilds the model; its outputs equal the
emulated {h['format']} model's bit for bit.

## Checks made at export

- `onnx.checker` accepts `model.onnx` (opset {info['opset']}).
- ONNX Runtime against PyTorch on {check['images']} real test images: largest absolute difference of the logits
  {check['max_abs_diff']:.2e} (tolerance {check['tolerance']:.0e} × max(1, |logit|)), same predicted class for
  {check['agreement']:.2%} of images. Both run the weights as stored in {h['format']}.
- The packed weights, loaded back, give logits identical to the emulated model on the same images.
{_c_section(info)}"""


_DESCRIBE = {
    "model.onnx": "the network with the weights as stored in the format (float32 tensors); BatchNorm folded",
    "weights.bin": "packed weights",
    "weights.json": "header of the packed weights: format, tensor names, shapes, offsets",
    "model.h": "C header: packed arrays, tensor table, format constants, decoding functions",
    "MODEL_CARD.md": "this file",
    "c/iotnas_model.c": "C library: packed weights, their decoder, the static arena, the layer sequence",
    "c/iotnas_model.h": "C library: iotnas_run() and the input/output sizes",
    "c/iotnas_ops.c": "C library: the kernels (convolution, pooling, BatchNorm, addition, linear)",
    "c/iotnas_ops.h": "C library: kernel declarations and the float-format decoder",
}


def _c_section(info: dict[str, Any]) -> str:
    """The C library's checks and device budget (``export --c``), or nothing."""
    lib = info.get("c_library")
    if not lib:
        return ""
    check, budget = lib["check"], lib["budget"]
    lines = [
        ("- The C library (`c/`), built with `gcc -std=c99 -O2 -Wall -Wextra -Werror`, against the emulated model on "
         f"{check['images']} real test images: largest absolute difference {check['max_abs_diff']:.2e} (tolerance "
         f"{check['tolerance']:.0e} × max(1, |logit|)), same class for {check['agreement']:.2%}."),
        "",
        "## On a microcontroller (`c/`)",
        "",
        "| | bytes |",
        "|---|---:|",
        f"| Promised weight memory | {info['weight_bytes']:,} |",
        f"| Peak activations (float32, `iotnas cost`) | {info['peak_activation_bytes']:,} |",
        f"| Static arena (liveness plan) | {lib['arena_bytes']:,} |",
        f"| Decoded weight row (scratch) | {lib['scratch_bytes']:,} |",
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
