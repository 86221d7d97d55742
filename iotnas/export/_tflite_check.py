"""Run ``model_int8.tflite`` in the LiteRT interpreter on real test images and compare it with the int8-emulated model.

The int8-emulated model is the deployed int8 network in PyTorch: int8 weights, float32
activations. The TFLite model differs from it by its int8 activations only, so its accuracy on
the same images is the cost of integer inference, and a converter error (a wrong layout, a wrong
padding) shows as predictions that no longer follow the emulated model's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from iotnas.errors import ExportError
from iotnas.export._tflite import TfliteFile

#: The export fails when the TFLite model's logits follow the int8-emulated model's less closely than
#: this (Pearson correlation of the logits, each image's mean removed). Int8 activations add noise to
#: every logit (0.98 for the briefly trained models of the tests); a wrongly converted layer computes
#: another function (images paired at random: about 0). Predicted classes are not the criterion: a
#: barely trained model has images whose two best logits differ by less than that noise, and those
#: flip without anything being wrong.
MIN_CORRELATION = 0.9


@dataclass(frozen=True, slots=True)
class TfliteCheck:
    images: int  # real test images run
    accuracy: float  # the TFLite model's, in the LiteRT interpreter
    int8_accuracy: float  # the int8-emulated model's (int8 weights, float32 activations), same images
    agreement: float  # fraction of images with the same predicted class as the int8-emulated model
    max_abs_diff: float  # largest |dequantized TFLite logit - emulated logit|
    logit_correlation: float  # of the TFLite and emulated logits, each image's mean removed
    min_correlation: float  # the export fails below this correlation


def run_tflite(model: TfliteFile, images: torch.Tensor, *, reference_kernels: bool = False) -> np.ndarray:
    """Dequantized logits of ``model`` in the LiteRT interpreter, one NCHW float32 image at a time.

    ``reference_kernels``: TensorFlow Lite's reference kernels (the arithmetic TensorFlow Lite
    Micro runs) instead of the optimised ones and the XNNPACK delegate, whose requantisation may
    round differently.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.BUILTIN_REF if reference_kernels else OpResolverType.AUTO
    try:
        interpreter = Interpreter(model_content=model.data, num_threads=1, experimental_op_resolver_type=resolver)
        interpreter.allocate_tensors()
    except (RuntimeError, ValueError) as exc:
        raise ExportError(f"the LiteRT interpreter refuses model_int8.tflite: {exc}") from None
    source, target = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
    nhwc = images.permute(0, 2, 3, 1).contiguous().numpy()
    outputs = []
    for i in range(len(nhwc)):
        interpreter.set_tensor(source, model.input.quantize(nhwc[i:i + 1]))
        interpreter.invoke()
        outputs.append(model.output.dequantize(interpreter.get_tensor(target)))
    return np.concatenate(outputs)


def check_tflite(model: TfliteFile, images: torch.Tensor, labels: torch.Tensor, emulated: torch.Tensor) -> TfliteCheck:
    """Run ``model`` on ``images`` and compare with ``emulated``, the int8-emulated model's logits.

    Raises:
        ExportError: the interpreter refuses the model, or its logits correlate with the emulated
            model's less than :data:`MIN_CORRELATION`.
    """
    logits = run_tflite(model, images)
    reference = emulated.numpy()
    truth = labels.numpy()
    predicted = logits.argmax(1)
    check = TfliteCheck(
        images=len(images), accuracy=float((predicted == truth).mean()),
        int8_accuracy=float((reference.argmax(1) == truth).mean()),
        agreement=float((predicted == reference.argmax(1)).mean()),
        max_abs_diff=float(np.abs(logits - reference).max()),
        logit_correlation=_centred_correlation(logits, reference), min_correlation=MIN_CORRELATION)
    if not check.logit_correlation >= MIN_CORRELATION:
        raise ExportError(f"model_int8.tflite's logits follow the int8-emulated model's with a correlation of only "
                          f"{check.logit_correlation:.2f} on {check.images} test images (at least {MIN_CORRELATION} "
                          f"expected; same class on {check.agreement:.0%}); the conversion is wrong")
    return check


def _centred_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two ``(images, classes)`` logit arrays, each row's mean removed first
    (a softmax ignores a constant added to an image's logits)."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denominator = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum()) / denominator if denominator > 0 else 0.0


__all__ = ["MIN_CORRELATION", "TfliteCheck", "check_tflite", "run_tflite"]
