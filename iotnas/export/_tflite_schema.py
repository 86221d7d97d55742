"""A TFLite flatbuffer written with the ``tflite`` package's schema builders: tensors, buffers, operators.

The converter (:mod:`iotnas.export._tflite`) decides *what* the model holds; this module only
knows the schema: one subgraph, buffer 0 empty (the schema's rule), constant data aligned to 16
bytes (as TensorFlow's own converter writes it, so a runtime may read it in place), and each
operator code written with both its current and its deprecated 8-bit builtin code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import flatbuffers
import numpy as np
import tflite

#: The schema version every current TFLite runtime reads.
SCHEMA_VERSION = 3
_DATA_ALIGNMENT = 16  # bytes
#: Operator codes above this are written as this value in the 8-bit ``deprecated_builtin_code``.
_PLACEHOLDER_FOR_GREATER_OP_CODES = 127
_TYPES = {np.dtype(np.int8): tflite.TensorType.INT8, np.dtype(np.int32): tflite.TensorType.INT32}

#: Builds an operator's options table and returns its offset.
OptionsWriter = Callable[[flatbuffers.Builder], int]


@dataclass(frozen=True, slots=True)
class Quantization:
    """``real = scale * (q - zero_point)``, one scale per index of ``axis`` when there are several."""

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int = 0


@dataclass(frozen=True, slots=True)
class _Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    buffer: int
    quantization: Quantization | None


@dataclass(frozen=True, slots=True)
class _Operator:
    opcode: int  # index into the model's operator codes
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options_type: int
    options: OptionsWriter | None


class FlatModel:
    """A one-subgraph TFLite model under construction; :meth:`serialize` writes the file."""

    def __init__(self) -> None:
        self._tensors: list[_Tensor] = []
        self._buffers: list[bytes] = [b""]  # buffer 0: the empty buffer of every non-constant tensor
        self._opcodes: dict[tuple[int, int], int] = {}
        self._operators: list[_Operator] = []
        self.inputs: list[int] = []
        self.outputs: list[int] = []

    @property
    def constant_bytes(self) -> int:
        """Bytes of constant data (weights, biases, shapes), without alignment or tables."""
        return sum(len(b) for b in self._buffers)

    def tensor(self, name: str, shape: Sequence[int], dtype: np.dtype | type, *,
               quantization: Quantization | None = None, data: np.ndarray | None = None) -> int:
        """Add a tensor (a constant when ``data`` is given); returns its index."""
        dtype = np.dtype(dtype)
        if dtype not in _TYPES:
            raise ValueError(f"no TFLite type for {dtype}")
        buffer = 0
        if data is not None:
            if data.dtype != dtype or tuple(data.shape) != tuple(shape):
                raise ValueError(f"constant {name}: data {data.dtype}{tuple(data.shape)} is not {dtype}{tuple(shape)}")
            self._buffers.append(np.ascontiguousarray(data).astype(data.dtype.newbyteorder("<")).tobytes())
            buffer = len(self._buffers) - 1
        self._tensors.append(_Tensor(name, tuple(int(s) for s in shape), dtype, buffer, quantization))
        return len(self._tensors) - 1

    def shape(self, index: int) -> tuple[int, ...]:
        return self._tensors[index].shape

    def quantization(self, index: int) -> Quantization | None:
        return self._tensors[index].quantization

    def operator(self, builtin: int, inputs: Sequence[int], outputs: Sequence[int], *, version: int,
                 options_type: int = tflite.BuiltinOptions.NONE, options: OptionsWriter | None = None) -> None:
        """Append an operator (operators run in the order they are added)."""
        opcode = self._opcodes.setdefault((builtin, version), len(self._opcodes))
        self._operators.append(_Operator(opcode, tuple(inputs), tuple(outputs), options_type, options))

    # -- serialization -----------------------------------------------------------------------
    def serialize(self, *, description: str) -> bytes:
        b = flatbuffers.Builder(1024)
        buffers = [self._buffer(b, data) for data in self._buffers]
        tensors = [self._tensor(b, t) for t in self._tensors]
        operators = [self._operator(b, op) for op in self._operators]
        subgraph_tensors = _tables(b, tflite.SubGraphStartTensorsVector, tensors)
        subgraph_operators = _tables(b, tflite.SubGraphStartOperatorsVector, operators)
        inputs = b.CreateNumpyVector(np.array(self.inputs, dtype=np.int32))
        outputs = b.CreateNumpyVector(np.array(self.outputs, dtype=np.int32))
        subgraph = write_table(b, "SubGraph", Tensors=subgraph_tensors, Inputs=inputs, Outputs=outputs,
                               Operators=subgraph_operators, Name=b.CreateString("main"))
        codes = [write_table(b, "OperatorCode", BuiltinCode=builtin, Version=version,
                             DeprecatedBuiltinCode=min(builtin, _PLACEHOLDER_FOR_GREATER_OP_CODES))
                 for builtin, version in self._opcodes]
        opcodes = _tables(b, tflite.ModelStartOperatorCodesVector, codes)
        subgraphs = _tables(b, tflite.ModelStartSubgraphsVector, [subgraph])
        model_buffers = _tables(b, tflite.ModelStartBuffersVector, buffers)
        model = write_table(b, "Model", Version=SCHEMA_VERSION, OperatorCodes=opcodes, Subgraphs=subgraphs,
                            Description=b.CreateString(description), Buffers=model_buffers)
        b.Finish(model, file_identifier=b"TFL3")
        return bytes(b.Output())

    @staticmethod
    def _buffer(b: flatbuffers.Builder, data: bytes) -> int:
        vector = None
        if data:
            b.StartVector(1, len(data), _DATA_ALIGNMENT)
            b.head = b.head - len(data)
            b.Bytes[b.head:b.head + len(data)] = data
            vector = b.EndVector()
        return write_table(b, "Buffer", Data=vector)

    @staticmethod
    def _tensor(b: flatbuffers.Builder, t: _Tensor) -> int:
        name = b.CreateString(t.name)
        shape = b.CreateNumpyVector(np.array(t.shape, dtype=np.int32))
        quantization = None
        if t.quantization is not None:
            scale = b.CreateNumpyVector(np.array(t.quantization.scale, dtype=np.float32))
            zero_point = b.CreateNumpyVector(np.array(t.quantization.zero_point, dtype=np.int64))
            quantization = write_table(b, "QuantizationParameters", Scale=scale, ZeroPoint=zero_point,
                                       QuantizedDimension=t.quantization.axis)
        return write_table(b, "Tensor", Shape=shape, Type=_TYPES[t.dtype], Buffer=t.buffer, Name=name,
                           Quantization=quantization)

    @staticmethod
    def _operator(b: flatbuffers.Builder, op: _Operator) -> int:
        inputs = b.CreateNumpyVector(np.array(op.inputs, dtype=np.int32))
        outputs = b.CreateNumpyVector(np.array(op.outputs, dtype=np.int32))
        options = op.options(b) if op.options is not None else None
        return write_table(b, "Operator", OpcodeIndex=op.opcode, Inputs=inputs, Outputs=outputs,
                           BuiltinOptionsType=None if options is None else op.options_type, BuiltinOptions=options)


def write_table(b: flatbuffers.Builder, table: str, **fields) -> int:
    """One table of the schema through the ``tflite`` builders: ``<table>Start``, ``<table>Add<Field>``
    for each field that is not None (nested tables, vectors and strings already built), ``<table>End``."""
    getattr(tflite, f"{table}Start")(b)
    for key, value in fields.items():
        if value is not None:
            getattr(tflite, f"{table}Add{key}")(b, value)
    return getattr(tflite, f"{table}End")(b)


def _tables(b: flatbuffers.Builder, start: Callable[[flatbuffers.Builder, int], None], offsets: list[int]) -> int:
    """A vector of tables (flatbuffers are built back to front)."""
    start(b, len(offsets))
    for offset in reversed(offsets):
        b.PrependUOffsetTRelative(offset)
    return b.EndVector()


__all__ = ["SCHEMA_VERSION", "FlatModel", "OptionsWriter", "Quantization", "write_table"]
