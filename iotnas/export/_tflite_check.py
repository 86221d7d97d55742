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

#: The export fails when the TFLite model predicts the emulated model's class on fewer of the check
#: images than this: int8 activations move a trained model's predictions on a few percent of images
#: (95-96% agreement for the briefly trained models of the tests), a wrongly converted layer on most.
MIN_AGREEMENT = 0.8


@dataclass(frozen=True, slots=True)
class TfliteCheck:
    images: int  # real test images run
    accuracy: float  # the TFLite model's, in the LiteRT interpreter
    int8_accuracy: float  # the int8-emulated model's (int8 weights, float32 activations), same images
    agreement: float  # fraction of images with the same predicted class as the int8-emulated model
    max_abs_diff: float  # largest |dequantized TFLite logit - emulated logit|
    min_agreement: float  # the export fails below this agreement


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
        ExportError: the interpreter refuses the model, or agrees with the emulated model on fewer
            than :data:`MIN_AGREEMENT` of the images.
    """
    logits = run_tflite(model, images)
    reference = emulated.numpy()
    truth = labels.numpy()
    predicted = logits.argmax(1)
    check = TfliteCheck(
        images=len(images), accuracy=float((predicted == truth).mean()),
        int8_accuracy=float((reference.argmax(1) == truth).mean()),
        agreement=float((predicted == reference.argmax(1)).mean()),
        max_abs_diff=float(np.abs(logits - reference).max()), min_agreement=MIN_AGREEMENT)
    if not check.agreement >= MIN_AGREEMENT:
        raise ExportError(f"model_int8.tflite predicts the int8-emulated model's class on only {check.agreement:.0%} of "
                          f"{check.images} test images (at least {MIN_AGREEMENT:.0%} expected); the conversion is "
                          "wrong")
    return check


__all__ = ["MIN_AGREEMENT", "TfliteCheck", "check_tflite", "run_tflite"]
