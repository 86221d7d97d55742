"""Export a trained model so a device can run it, at the size the search promised.

One folder per export, written to a temporary folder beside it and renamed into
place at the end, so a failed export leaves nothing behind:

* ``model.onnx``: the network with its weights as stored in the chosen format (opset
  :data:`OPSET`), checked with ``onnx.checker`` and against PyTorch with ONNX Runtime
  on real test images;
* ``weights.bin`` + ``weights.json``: the packed weights, exactly
  ``ceil(n_values * bits / 8)`` bytes (plus scales for integer formats), and their header;
  :func:`load_packed` restores the model with outputs equal to the emulated ones bit for bit;
* ``model_int8.tflite``: the full-integer int8 TFLite model (what TensorFlow Lite Micro runs),
  activations calibrated on training images, checked in the LiteRT interpreter on real test images;
* ``model.h``: the same packed arrays and the format's constants for C projects;
* ``MODEL_CARD.md``: architecture, figures, training, format, device, date.
"""

from iotnas.export._deploy import (
    ChannelAffine,
    DeployedModel,
    DeployedTensor,
    deploy,
    fold_batchnorm,
)
from iotnas.export._model import (
    ONNX_TOLERANCE,
    OPSET,
    ExportResult,
    OnnxCheck,
    TfliteExport,
    export_model,
)
from iotnas.export._packed import load_packed, promised_bytes, read_packed
from iotnas.export._tflite import (
    CALIBRATION_IMAGES,
    TensorQuantization,
    TfliteFile,
    int8_tflite,
)
from iotnas.export._tflite_check import (
    MIN_CORRELATION,
    TfliteCheck,
    check_tflite,
    run_tflite,
)

__all__ = [
    "CALIBRATION_IMAGES",
    "MIN_CORRELATION",
    "ONNX_TOLERANCE",
    "OPSET",
    "ChannelAffine",
    "DeployedModel",
    "DeployedTensor",
    "ExportResult",
    "OnnxCheck",
    "TensorQuantization",
    "TfliteCheck",
    "TfliteExport",
    "TfliteFile",
    "check_tflite",
    "deploy",
    "export_model",
    "fold_batchnorm",
    "int8_tflite",
    "load_packed",
    "promised_bytes",
    "read_packed",
    "run_tflite",
]
