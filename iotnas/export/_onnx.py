"""``model.onnx`` at the promised size: every deployed tensor stored in its format, decoded by the graph itself.

Each weight initializer of the float32 export is replaced by the format's codes and a few
standard operators that ONNX Runtime runs unchanged (opset :data:`OPSET`):

* ``float32``: the float32 tensor itself;
* ``float16`` / ``bfloat16``: a 16-bit initializer and ``Cast``;
* other float formats of at most 8 bits: the codes and one shared table of the format's
  2^bits values (float32), ``Gather(table, codes)``;
* float formats of 9 to 16 bits: the codes, split into sign-and-exponent ``h`` and mantissa
  ``m``; value = ``step[h] * (m + lead[h])``, two tables of 2^(1+e) entries (exact: a power of
  two times an integer below 2^16);
* ``intB``: two's complement codes and the per-channel scales in their float16, decoded by
  ``DequantizeLinear`` (per channel, axis 0) after a ``Cast`` of the scales to float32.

Codes of 8 bits are a uint8 (int8) initializer; narrower or wider codes are packed exactly as
``weights.bin`` packs them (:func:`iotnas.formats.pack`, one stream per tensor) and unpacked by
integer operators (``Range``, ``Mul``, ``Div``, ``Gather``, ``BitShift``, ``Add``). Every decoding
input is a constant, so ONNX Runtime folds the decoding away when it loads the session: the
batch-1 latency is the float32 graph's.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from iotnas.errors import ExportError
from iotnas.export._deploy import DeployedModel, DeployedTensor
from iotnas.formats import FloatFormat, IntFormat, NumberFormat, pack
from iotnas.latency.runtimes import OPSET, export_onnx

#: Widest codes the graph unpacks: a value then spans at most three bytes of its stream.
MAX_PACKED_BITS = 16
_FLOAT16, _BFLOAT16, _FLOAT32 = FloatFormat(5, 10), FloatFormat(8, 7), FloatFormat(8, 23)


@dataclass(frozen=True, slots=True)
class OnnxFile:
    """A format ONNX model and what its bytes are made of."""

    data: bytes
    weight_bytes: int  # initializers holding codes and scales (one packed stream per tensor)
    table_bytes: int  # decoding tables of float formats

    @property
    def overhead_bytes(self) -> int:
        """Everything but the stored weights: graph, names, shapes, decoding tables."""
        return len(self.data) - self.weight_bytes


def check_exportable(fmt: NumberFormat) -> None:
    """Refuse a format ``model.onnx`` cannot store at its size.

    Raises:
        ExportError: a float format wider than 16 bits other than float32.
    """
    if isinstance(fmt, FloatFormat) and fmt.bits > MAX_PACKED_BITS and fmt != _FLOAT32:
        raise ExportError(
            f"{fmt.name} ({fmt.bits} bits) cannot be stored in model.onnx at its size: the exporter stores float "
            f"formats of at most {MAX_PACKED_BITS} bits, and float32; export in one of those (e.g. float16, e5m10)"
        )


def format_onnx(deployed: DeployedModel, *, input_shape: tuple[int, ...]) -> OnnxFile:
    """The ONNX file of ``deployed`` with each of its tensors stored in ``deployed.format``.

    Raises:
        ExportError: the format cannot be stored (:func:`check_exportable`), a weight is not
            finite in the format, or a deployed tensor is missing from the exported graph.
    """
    import onnx

    fmt = deployed.format
    check_exportable(fmt)
    for t in deployed.tensors.values():
        if not bool(torch.isfinite(t.values).all()):
            raise ExportError(f"{t.name} does not fit in {fmt.name} (values overflow to infinity); use a format "
                              "with a wider exponent")
    marked = copy.deepcopy(deployed.module)
    with torch.no_grad():  # distinct constants: the exporter merges equal initializers, which would hide a name
        for i, t in enumerate(marked.state_dict(keep_vars=True).values()):
            t.fill_(i + 1)
    model = onnx.load_from_string(export_onnx(marked, input_shape=input_shape, constant_folding=False))
    by_name = {init.name: init for init in model.graph.initializer}
    missing = [name for name in deployed.tensors if name not in by_name]
    if missing:
        raise ExportError(f"the exported graph has no initializer for {', '.join(missing[:4])}; cannot store them")
    for name in deployed.tensors:
        model.graph.initializer.remove(by_name[name])
    builder = _Decoder(model.graph, fmt)
    builder.decode(list(deployed.tensors.values()))
    for node in model.graph.node:  # the exporter's long node names and notes are not needed to run the graph
        node.name, node.doc_string = "", ""
    model.doc_string = ""
    data = model.SerializeToString()
    return OnnxFile(data=data, weight_bytes=builder.weight_bytes, table_bytes=builder.table_bytes)


class _Decoder:
    """Adds, for one tensor at a time, its stored initializers and the nodes that rebuild its float32 value."""

    def __init__(self, graph, fmt: NumberFormat):
        self.graph, self.fmt = graph, fmt
        self.weight_bytes = self.table_bytes = 0
        self._nodes: list = []
        self._consts: dict[str, np.ndarray] = {}
        self._n = 0

    # -- helpers ----------------------------------------------------------------------------
    def _name(self, stem: str) -> str:
        self._n += 1
        return f"_{stem}{self._n}"

    def _node(self, op: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        from onnx import helper

        output = output or self._name(op[:2].lower())
        self._nodes.append(helper.make_node(op, inputs, [output], **attrs))
        return output

    def _init(self, name: str, array: np.ndarray, *, weight: bool = False, table: bool = False) -> str:
        from onnx import numpy_helper

        if name in self._consts:  # a constant shared by several nodes
            return name
        self._consts[name] = array
        self.graph.initializer.append(numpy_helper.from_array(array, name))
        self.weight_bytes += array.nbytes if weight else 0
        self.table_bytes += array.nbytes if table else 0
        return name

    def _bf16(self, name: str, values: torch.Tensor) -> str:
        from onnx import TensorProto, helper

        raw = (values.float().contiguous().view(torch.int32) >> 16).to(torch.int16).numpy().tobytes()
        self.graph.initializer.append(helper.make_tensor(name, TensorProto.BFLOAT16, list(values.shape), raw, raw=True))
        self.weight_bytes += len(raw)
        return name

    # -- codes -------------------------------------------------------------------------------
    def _codes(self, tensors: list[DeployedTensor], bits: int, *, signed: bool = False) -> str:
        """One flat tensor of every code, in tensor order: uint8 (int8 if ``signed``) at 8 bits, else uint32.

        The initializer is the stream ``weights.bin`` holds: ``ceil(n_values * bits / 8)`` bytes.
        """
        codes = torch.cat([t.encoded.codes.reshape(-1) for t in tensors])
        if bits == 8:
            array = codes.to(torch.uint8).numpy()
            return self._init("_codes", array.view(np.int8) if signed else array, weight=True)
        packed = self._init("_codes", np.frombuffer(pack(codes, bits), dtype=np.uint8).copy(), weight=True)
        return self._unpack(packed, n=codes.numel(), bits=bits)

    def _unpack(self, packed: str, *, n: int, bits: int) -> str:
        """Value i of a little-endian bit stream: bits [i*bits, (i+1)*bits), read from three bytes."""
        from onnx import TensorProto

        i64 = lambda v: np.array(v, dtype=np.int64)
        u32 = lambda v: np.array(v, dtype=np.uint32)
        padded = self._node("Concat", [packed, self._init("_pad", np.zeros(2, np.uint8))], axis=0)
        stream = self._node("Cast", [padded], to=TensorProto.UINT32)
        index = self._node("Range", [self._init("_zero", i64(0)), self._init("_n", i64(n)), self._init("_one", i64(1))])
        bit = self._node("Mul", [index, self._init("_bits", i64(bits))])
        byte = self._node("Div", [bit, self._init("_eight", i64(8))])
        offset = self._node("Sub", [bit, self._node("Mul", [byte, "_eight"])])
        word = self._node("Gather", [stream, byte])
        for k in (1, 2):
            following = self._node("Gather", [stream, self._node("Add", [byte, self._init(f"_k{k}", i64(k))])])
            shifted = self._node("BitShift", [following, self._init(f"_s{8 * k}", u32(8 * k))], direction="LEFT")
            word = self._node("Add", [word, shifted])  # disjoint bits: addition is bitwise or
        # Keep bits [offset, offset + bits): shift them to the top of 32, then down to the bottom.
        left = self._node("Cast", [self._node("Sub", [self._init("_top", i64(32 - bits)), offset])],
                          to=TensorProto.UINT32)
        top = self._node("BitShift", [word, left], direction="LEFT")
        return self._node("BitShift", [top, self._init("_down", u32(32 - bits))], direction="RIGHT")

    def _split(self, flat: str, counts: list[int]) -> list[str]:
        """``flat`` cut into consecutive pieces of ``counts`` values."""
        from onnx import helper

        outputs = [self._name("t") for _ in counts]
        sizes = self._init(self._name("sizes"), np.array(counts, dtype=np.int64))
        self._nodes.append(helper.make_node("Split", [flat, sizes], outputs, axis=0))
        return outputs

    def _reshape(self, flat: str, shape: tuple[int, ...], output: str | None = None) -> str:
        return self._node("Reshape", [flat, self._init(self._name("shape"), np.array(shape, dtype=np.int64))],
                          output=output)

    # -- every tensor --------------------------------------------------------------------------
    def decode(self, tensors: list[DeployedTensor]) -> None:
        """Initializers and nodes giving each tensor's float32 value under its own name."""
        from onnx import TensorProto

        fmt = self.fmt
        if fmt == _FLOAT32:
            for t in tensors:
                self._init(t.name, t.values.numpy().astype(np.float32), weight=True)
            return self.finish()
        if isinstance(fmt, IntFormat):
            return self._decode_int(tensors, fmt)
        if fmt == _FLOAT16:
            flat = self._init("_f16", torch.cat([t.values.reshape(-1) for t in tensors]).numpy().astype(np.float16),
                              weight=True)
            values = self._node("Cast", [flat], to=TensorProto.FLOAT)
        elif fmt == _BFLOAT16:
            values = self._node("Cast", [self._bf16("_bf16", torch.cat([t.values.reshape(-1) for t in tensors]))],
                                to=TensorProto.FLOAT)
        elif fmt.bits <= 8:
            index = self._node("Cast", [self._codes(tensors, fmt.bits)], to=TensorProto.INT64)
            table = self._init("_table", _values(fmt, np.arange(1 << fmt.bits)), table=True)
            values = self._node("Gather", [table, index])
        else:
            values = self._decode_wide_float(self._codes(tensors, fmt.bits), fmt)
        for t, piece in zip(tensors, self._split(values, [t.values.numel() for t in tensors])):
            self._reshape(piece, t.shape, output=t.name)
        return self.finish()

    def _decode_wide_float(self, codes: str, fmt: FloatFormat) -> str:
        from onnx import TensorProto

        m = self._init("_m", np.array(fmt.man_bits, np.uint32))
        high_u = self._node("BitShift", [codes, m], direction="RIGHT")
        high = self._node("Cast", [high_u], to=TensorProto.INT64)
        low = self._node("Sub", [codes, self._node("BitShift", [high_u, m], direction="LEFT")])
        step, lead = _split_tables(fmt)
        step_name = self._init("_step", step, table=True)
        lead_name = self._init("_lead", lead, table=True)
        significand = self._node("Add", [self._node("Cast", [low], to=TensorProto.FLOAT),
                                         self._node("Gather", [lead_name, high])])
        return self._node("Mul", [self._node("Gather", [step_name, high]), significand])

    def _decode_int(self, tensors: list[DeployedTensor], fmt: IntFormat) -> None:
        from onnx import TensorProto

        b = fmt.bits
        if b == 8:
            q = self._codes(tensors, 8, signed=True)
        else:
            codes = self._node("Cast", [self._codes(tensors, b)], to=TensorProto.INT32)
            negative = self._node("Greater", [codes, self._init("_qmax", np.array(fmt.qmax, np.int32))])
            wrapped = self._node("Sub", [codes, self._init("_wrap", np.array(1 << b, np.int32))])
            q = self._node("Cast", [self._node("Where", [negative, wrapped, codes])], to=TensorProto.INT8)
        scales = torch.cat([t.encoded.scales.reshape(-1) for t in tensors]).numpy()
        if fmt.scale_format == "float16":
            scale = self._node("Cast", [self._init("_scales", scales.astype(np.float16), weight=True)],
                               to=TensorProto.FLOAT)
        else:
            scale = self._init("_scales", scales.astype(np.float32), weight=True)
        pieces = self._split(q, [t.values.numel() for t in tensors])
        scale_pieces = self._split(scale, [t.encoded.scales.numel() for t in tensors])
        for t, piece, s in zip(tensors, pieces, scale_pieces):
            if len(t.shape) >= 2:  # one scale per output channel
                self._node("DequantizeLinear", [self._reshape(piece, t.shape), s], output=t.name, axis=0)
            else:  # a vector: one scale for the tensor
                scalar = self._node("Reshape", [s, self._init("_scalar", np.zeros(0, np.int64))])
                self._reshape(self._node("DequantizeLinear", [piece, scalar]), t.shape, output=t.name)
        self.finish()

    def finish(self) -> None:
        """Put the decoding nodes first: ONNX wants nodes in topological order."""
        old = list(self.graph.node)
        del self.graph.node[:]
        self.graph.node.extend(self._nodes + old)


def _values(fmt: FloatFormat, codes: np.ndarray) -> np.ndarray:
    from iotnas.formats import Encoded

    return fmt.decode(Encoded(torch.from_numpy(codes.astype(np.int64)))).numpy().astype(np.float32)


def _split_tables(fmt: FloatFormat) -> tuple[np.ndarray, np.ndarray]:
    """``step[h]``, ``lead[h]`` for h = (sign, exponent): value = step[h] * (mantissa + lead[h]).

    ``lead`` is the implicit leading one (2^m for normal numbers, 0 for subnormals); ``step`` the
    value of one mantissa unit, signed. Exponent codes reserved for infinities and NaN never occur
    (weights are checked finite), their entries are those of the binade below.
    """
    m = fmt.man_bits
    h = np.arange(1 << (1 + fmt.exp_bits))
    exponent, sign = h & ((1 << fmt.exp_bits) - 1), h >> fmt.exp_bits
    unit = np.ldexp(1.0, np.maximum(exponent, 1) - fmt.bias - m).astype(np.float32)
    step = np.where(sign == 1, -unit, unit).astype(np.float32)
    lead = np.where(exponent == 0, 0.0, float(1 << m)).astype(np.float32)
    return step, lead


__all__ = ["MAX_PACKED_BITS", "OPSET", "OnnxFile", "check_exportable", "format_onnx"]
