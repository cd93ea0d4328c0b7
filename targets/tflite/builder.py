"""Write TFLite flatbuffer models directly, without TensorFlow.

:class:`ModelBuilder` collects tensors, operators and metadata of one subgraph and packs them
with the flatbuffer object API generated from ``schema.fbs`` (shipped in ``ai_edge_litert``
as ``schema_py_generated``). The result is the bytes of a ``.tflite`` file (identifier
``TFL3``, schema version 3) that ``ai_edge_litert.interpreter.Interpreter`` loads.

Conventions of the written file (those of the TFLite converter):

- **Buffers.** Buffer 0 is the empty sentinel; every tensor without constant data points to
  it. Each constant tensor and each metadata entry gets its own buffer, whose data starts at a
  64-byte boundary of the file (LiteRT's host-memory tensor-buffer alignment: its custom-op
  dispatcher refuses a constant input whose data is less aligned, once the file is loaded at a
  64-byte aligned address).
- **Quantization.** ``real = scale * (q - zero_point)``. Per-tensor parameters are one scale and
  one zero point; per-channel parameters hold one scale (and zero point) per index of
  ``quantized_dimension``, e.g. dimension 0 of an OHWI ``CONV_2D`` filter, dimension 3 of a
  ``1 x kh x kw x C`` ``DEPTHWISE_CONV_2D`` filter, dimension 0 of an ``out x in``
  ``FULLY_CONNECTED`` weight. TFLite's int8 kernels expect symmetric weights (zero point 0)
  and an int32 bias with ``scale = s_in * s_w[c]`` and zero point 0; scales are stored as
  float32.
- **int4.** Constant ``int4`` data is given as integers in ``[-8, 7]`` and stored packed two per
  byte in C order, low nibble first: element ``2k`` in bits 0-3 and element ``2k + 1`` in bits
  4-7 of byte ``k`` (two's complement nibbles; an odd count leaves the last high nibble 0). The
  tensor type is ``INT4``.
- **Operator codes.** ``builtin_code`` holds the real operator; ``deprecated_builtin_code`` is
  ``min(code, 127)`` (127 = "look at builtin_code"), as readers of old and new schemas expect.
- **Optional inputs** (a missing bias) are the tensor index ``-1``.
- **Custom operators** (``op="CUSTOM"``) have the builtin code ``CUSTOM`` (32), their name in
  the operator code's ``custom_code`` and their parameters as raw ``custom_options`` bytes
  (which the runtime hands to the kernel's init unparsed; ``custom_options_format`` stays the
  schema default). Each distinct ``(custom_code, version)`` gets its own operator code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flatbuffers
import numpy as np

from climbq_deploy.errors import ConfigError

try:
    from ai_edge_litert import schema_py_generated as schema
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "climbq_deploy.targets.tflite.builder needs the TFLite schema from ai-edge-litert; "
        "install it with `pip install climbq-deploy[tflite]`"
    ) from error

FILE_IDENTIFIER = b"TFL3"
SCHEMA_VERSION = 3
BUFFER_ALIGNMENT = 64  # LITERT_HOST_MEMORY_BUFFER_ALIGNMENT (litert_tensor_buffer_types.h)

# dtype name -> (schema TensorType, little-endian NumPy dtype of the unpacked values)
_DTYPES: dict[str, tuple[int, np.dtype]] = {
    "int4": (schema.TensorType.INT4, np.dtype(np.int8)),
    "int8": (schema.TensorType.INT8, np.dtype(np.int8)),
    "int16": (schema.TensorType.INT16, np.dtype("<i2")),
    "int32": (schema.TensorType.INT32, np.dtype("<i4")),
    "int64": (schema.TensorType.INT64, np.dtype("<i8")),
    "uint8": (schema.TensorType.UINT8, np.dtype(np.uint8)),
    "float32": (schema.TensorType.FLOAT32, np.dtype("<f4")),
    "bool": (schema.TensorType.BOOL, np.dtype(np.bool_)),
}
DTYPES: tuple[str, ...] = tuple(_DTYPES)

_ACTIVATIONS = {
    "NONE": schema.ActivationFunctionType.NONE,
    "RELU": schema.ActivationFunctionType.RELU,
    "RELU_N1_TO_1": schema.ActivationFunctionType.RELU_N1_TO_1,
    "RELU6": schema.ActivationFunctionType.RELU6,
}
_PADDINGS = {"SAME": schema.Padding.SAME, "VALID": schema.Padding.VALID}
# deprecated_builtin_code of every op whose code is > 127: "the real code is in builtin_code"
_PLACEHOLDER_FOR_GREATER_OP_CODES = schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES


def pack_int4(values: np.ndarray) -> bytes:
    """Pack integers in ``[-8, 7]`` two per byte, C order, low nibble first (see module doc)."""
    flat = np.asarray(values).reshape(-1).astype(np.int64)
    if flat.size and (flat.min() < -8 or flat.max() > 7):
        raise ConfigError(
            f"int4 data must lie in [-8, 7]; got values in [{flat.min()}, {flat.max()}]"
        )
    nibbles = (flat & 0xF).astype(np.uint8)
    if nibbles.size % 2:
        nibbles = np.append(nibbles, np.uint8(0))
    return (nibbles[0::2] | (nibbles[1::2] << 4)).astype(np.uint8).tobytes()


class _AlignedBufferT(schema.BufferT):
    """A ``Buffer`` whose data vector starts at a :data:`BUFFER_ALIGNMENT`-byte boundary
    (the generated ``Pack`` aligns to 4 only; int64/float kernels and mmap readers want more).
    """

    def __init__(self, payload: bytes | None) -> None:
        super().__init__()
        self.payload = payload

    def Pack(self, builder: flatbuffers.Builder) -> int:  # noqa: N802 - generated API name
        data = None
        if self.payload is not None:
            size = len(self.payload)
            builder.StartVector(1, size, BUFFER_ALIGNMENT)
            builder.head = builder.head - size
            builder.Bytes[builder.head : builder.head + size] = self.payload
            data = builder.EndVector()
        schema.BufferStart(builder)
        if data is not None:
            schema.BufferAddData(builder, data)
        return schema.BufferEnd(builder)


class _Options:
    """The keyword options of one ``add_operator`` call; unknown keys are an error."""

    def __init__(self, op: str, given: dict[str, Any]) -> None:
        self.op = op
        self.given = given
        self.used: set[str] = set()

    def get(self, key: str, default: Any = None, *, required: bool = False) -> Any:
        self.used.add(key)
        if key not in self.given:
            if required:
                raise ConfigError(f"{self.op} needs the option {key!r}")
            return default
        return self.given[key]

    def integer(self, key: str, default: int | None = None, *, minimum: int | None = None) -> int:
        value = self.get(key, default, required=default is None)
        if not isinstance(value, int | np.integer) or isinstance(value, bool):
            raise ConfigError(f"{self.op} option {key!r} must be an integer; got {value!r}")
        if minimum is not None and value < minimum:
            raise ConfigError(f"{self.op} option {key!r} must be >= {minimum}; got {value}")
        return int(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool | np.bool_):
            raise ConfigError(f"{self.op} option {key!r} must be True or False; got {value!r}")
        return bool(value)

    def choice(self, key: str, default: str, table: dict[str, int]) -> int:
        value = self.get(key, default)
        if value not in table:
            raise ConfigError(
                f"{self.op} option {key!r} must be one of {', '.join(table)}; got {value!r}"
            )
        return table[value]

    def activation(self) -> int:
        return self.choice("fused_activation", "NONE", _ACTIVATIONS)

    def padding(self) -> int:
        return self.choice("padding", "VALID", _PADDINGS)

    def finish(self) -> None:
        unknown = sorted(set(self.given) - self.used)
        if unknown:
            raise ConfigError(
                f"{self.op} does not take the option(s) {', '.join(unknown)}; "
                f"it takes {', '.join(sorted(self.used)) or 'none'}"
            )


# builds the options table (a generated ``...OptionsT`` object) of one operator
_OptionsFactory = Callable[[_Options], Any]


def _conv(o: _Options) -> schema.Conv2DOptionsT:
    return schema.Conv2DOptionsT(
        padding=o.padding(),
        strideH=o.integer("stride_h", 1, minimum=1),
        strideW=o.integer("stride_w", 1, minimum=1),
        fusedActivationFunction=o.activation(),
        dilationHFactor=o.integer("dilation_h", 1, minimum=1),
        dilationWFactor=o.integer("dilation_w", 1, minimum=1),
    )


def _depthwise(o: _Options) -> schema.DepthwiseConv2DOptionsT:
    return schema.DepthwiseConv2DOptionsT(
        padding=o.padding(),
        strideH=o.integer("stride_h", 1, minimum=1),
        strideW=o.integer("stride_w", 1, minimum=1),
        depthMultiplier=o.integer("depth_multiplier", 1, minimum=1),
        fusedActivationFunction=o.activation(),
        dilationHFactor=o.integer("dilation_h", 1, minimum=1),
        dilationWFactor=o.integer("dilation_w", 1, minimum=1),
    )


def _pool(o: _Options) -> schema.Pool2DOptionsT:
    return schema.Pool2DOptionsT(
        padding=o.padding(),
        strideH=o.integer("stride_h", 1, minimum=1),
        strideW=o.integer("stride_w", 1, minimum=1),
        filterHeight=o.integer("filter_h", minimum=1),
        filterWidth=o.integer("filter_w", minimum=1),
        fusedActivationFunction=o.activation(),
    )


def _reshape(o: _Options) -> schema.ReshapeOptionsT:
    new_shape = o.get("new_shape")
    if new_shape is None:
        return schema.ReshapeOptionsT()
    return schema.ReshapeOptionsT(newShape=[int(d) for d in new_shape])


def _activation_only(cls: type) -> _OptionsFactory:
    return lambda o: cls(fusedActivationFunction=o.activation())


def _empty(cls: type) -> _OptionsFactory:
    return lambda o: cls()


# op name -> (BuiltinOperator code, BuiltinOptions type, factory of the options table or None)
_OPS: dict[str, tuple[int, int, _OptionsFactory | None]] = {
    "CONV_2D": (schema.BuiltinOperator.CONV_2D, schema.BuiltinOptions.Conv2DOptions, _conv),
    "DEPTHWISE_CONV_2D": (
        schema.BuiltinOperator.DEPTHWISE_CONV_2D,
        schema.BuiltinOptions.DepthwiseConv2DOptions,
        _depthwise,
    ),
    "ADD": (
        schema.BuiltinOperator.ADD,
        schema.BuiltinOptions.AddOptions,
        _activation_only(schema.AddOptionsT),
    ),
    "SUB": (
        schema.BuiltinOperator.SUB,
        schema.BuiltinOptions.SubOptions,
        _activation_only(schema.SubOptionsT),
    ),
    "MUL": (
        schema.BuiltinOperator.MUL,
        schema.BuiltinOptions.MulOptions,
        _activation_only(schema.MulOptionsT),
    ),
    "MAXIMUM": (
        schema.BuiltinOperator.MAXIMUM,
        schema.BuiltinOptions.MaximumMinimumOptions,
        _empty(schema.MaximumMinimumOptionsT),
    ),
    "FLOOR_DIV": (
        schema.BuiltinOperator.FLOOR_DIV,
        schema.BuiltinOptions.FloorDivOptions,
        _empty(schema.FloorDivOptionsT),
    ),
    "FLOOR_MOD": (
        schema.BuiltinOperator.FLOOR_MOD,
        schema.BuiltinOptions.FloorModOptions,
        _empty(schema.FloorModOptionsT),
    ),
    "MINIMUM": (
        schema.BuiltinOperator.MINIMUM,
        schema.BuiltinOptions.MaximumMinimumOptions,
        _empty(schema.MaximumMinimumOptionsT),
    ),
    "GREATER_EQUAL": (
        schema.BuiltinOperator.GREATER_EQUAL,
        schema.BuiltinOptions.GreaterEqualOptions,
        _empty(schema.GreaterEqualOptionsT),
    ),
    # CAST's options (in/out types) are filled from the tensors in add_operator.
    "CAST": (schema.BuiltinOperator.CAST, schema.BuiltinOptions.CastOptions, None),
    "SUM": (
        schema.BuiltinOperator.SUM,
        schema.BuiltinOptions.ReducerOptions,
        lambda o: schema.ReducerOptionsT(keepDims=o.boolean("keep_dims", False)),
    ),
    "MEAN": (
        schema.BuiltinOperator.MEAN,
        schema.BuiltinOptions.ReducerOptions,
        lambda o: schema.ReducerOptionsT(keepDims=o.boolean("keep_dims", False)),
    ),
    "RESHAPE": (schema.BuiltinOperator.RESHAPE, schema.BuiltinOptions.ReshapeOptions, _reshape),
    "FULLY_CONNECTED": (
        schema.BuiltinOperator.FULLY_CONNECTED,
        schema.BuiltinOptions.FullyConnectedOptions,
        lambda o: schema.FullyConnectedOptionsT(
            fusedActivationFunction=o.activation(),
            keepNumDims=o.boolean("keep_num_dims", False),
        ),
    ),
    "AVERAGE_POOL_2D": (
        schema.BuiltinOperator.AVERAGE_POOL_2D,
        schema.BuiltinOptions.Pool2DOptions,
        _pool,
    ),
    "MAX_POOL_2D": (
        schema.BuiltinOperator.MAX_POOL_2D,
        schema.BuiltinOptions.Pool2DOptions,
        _pool,
    ),
    "QUANTIZE": (
        schema.BuiltinOperator.QUANTIZE,
        schema.BuiltinOptions.QuantizeOptions,
        _empty(schema.QuantizeOptionsT),
    ),
    "DEQUANTIZE": (
        schema.BuiltinOperator.DEQUANTIZE,
        schema.BuiltinOptions.DequantizeOptions,
        _empty(schema.DequantizeOptionsT),
    ),
    "RELU": (schema.BuiltinOperator.RELU, schema.BuiltinOptions.NONE, None),
    "FLOOR": (schema.BuiltinOperator.FLOOR, schema.BuiltinOptions.NONE, None),
    "CONCATENATION": (
        schema.BuiltinOperator.CONCATENATION,
        schema.BuiltinOptions.ConcatenationOptions,
        lambda o: schema.ConcatenationOptionsT(
            axis=o.integer("axis"), fusedActivationFunction=o.activation()
        ),
    ),
    "PAD": (
        schema.BuiltinOperator.PAD,
        schema.BuiltinOptions.PadOptions,
        _empty(schema.PadOptionsT),
    ),
    "SLICE": (
        schema.BuiltinOperator.SLICE,
        schema.BuiltinOptions.SliceOptions,
        _empty(schema.SliceOptionsT),
    ),
    "GATHER": (
        schema.BuiltinOperator.GATHER,
        schema.BuiltinOptions.GatherOptions,
        lambda o: schema.GatherOptionsT(axis=o.integer("axis", 0), batchDims=0),
    ),
}
OPS: tuple[str, ...] = tuple(_OPS)
CUSTOM = "CUSTOM"  # the op name of add_operator for a custom operator (see its doc)


def _as_list(value: Sequence[Any] | Any) -> list[Any]:
    if isinstance(value, np.ndarray):
        return value.reshape(-1).tolist()
    if isinstance(value, Sequence):
        return list(value)
    return [value]


class ModelBuilder:
    """One-subgraph TFLite model under construction; :meth:`build` returns the file bytes.

    Typical use: ``add_tensor`` for inputs, constants and intermediates, ``add_operator`` in
    execution order, ``set_io``, optionally ``add_metadata``, then ``build``. Inputs and options
    are checked here and refused with :class:`~climbq_deploy.errors.ConfigError`, naming the
    tensor or operator, rather than left for the interpreter to reject.
    """

    def __init__(self, description: str = "climbq_deploy") -> None:
        self.description = description
        self._tensors: list[schema.TensorT] = []
        self._names: dict[str, int] = {}
        self._buffers: list[bytes | None] = [None]  # buffer 0: the empty sentinel
        # (builtin code, version, custom code or None) -> operator code index
        self._opcodes: dict[tuple[int, int, str | None], int] = {}
        self._operators: list[schema.OperatorT] = []
        self._metadata: list[schema.MetadataT] = []
        self._inputs: list[int] | None = None
        self._outputs: list[int] | None = None

    def add_tensor(
        self,
        name: str,
        shape: Sequence[int],
        dtype: str,
        data: np.ndarray | None = None,
        scale: Sequence[float] | float | None = None,
        zero_point: Sequence[int] | int | None = None,
        quantized_dimension: int = 0,
    ) -> int:
        """Add a tensor and return its index.

        ``dtype`` is one of :data:`DTYPES`. ``data`` makes the tensor a constant with its own
        buffer; it must have exactly ``shape`` and values representable in ``dtype`` (integers
        in range for integer types, ``[-8, 7]`` for int4, booleans for bool). ``scale`` (one
        value or one per index of ``quantized_dimension``) adds quantization parameters;
        ``zero_point`` defaults to 0 and a single zero point is repeated per channel.
        """
        if name in self._names:
            raise ConfigError(f"tensor name {name!r} is used twice (index {self._names[name]})")
        if dtype not in _DTYPES:
            raise ConfigError(f"tensor {name!r}: dtype {dtype!r} is not one of {DTYPES}")
        dims = [int(d) for d in shape]
        if any(d < 1 for d in dims):
            raise ConfigError(f"tensor {name!r}: shape {dims} must have positive dimensions")
        tensor_type, np_dtype = _DTYPES[dtype]

        buffer = 0
        if data is not None:
            buffer = len(self._buffers)
            self._buffers.append(self._encode(name, dims, dtype, np_dtype, np.asarray(data)))

        quantization = None
        if scale is not None:
            quantization = self._quantization(name, dims, scale, zero_point, quantized_dimension)
        elif zero_point is not None:
            raise ConfigError(f"tensor {name!r}: zero_point given without scale")

        self._tensors.append(
            schema.TensorT(
                shape=dims,
                type=tensor_type,
                buffer=buffer,
                name=name,
                quantization=quantization,
            )
        )
        self._names[name] = len(self._tensors) - 1
        return len(self._tensors) - 1

    @staticmethod
    def _encode(
        name: str, dims: list[int], dtype: str, np_dtype: np.dtype, data: np.ndarray
    ) -> bytes:
        """Little-endian bytes of constant ``data`` for a tensor of ``dtype``."""
        if list(data.shape) != dims:
            raise ConfigError(f"tensor {name!r}: data shape {list(data.shape)} != shape {dims}")
        kind = data.dtype.kind
        if dtype == "bool":
            if kind != "b":
                raise ConfigError(f"tensor {name!r}: bool data must be a bool array; got {kind}")
            return data.astype(np_dtype).tobytes()
        if dtype == "float32":
            if kind not in "fiu":
                raise ConfigError(f"tensor {name!r}: float32 data must be numeric; got {kind}")
            return np.ascontiguousarray(data, dtype=np_dtype).tobytes()
        if kind not in "iu":
            raise ConfigError(f"tensor {name!r}: {dtype} data must be integers; got {data.dtype}")
        if dtype == "int4":
            return pack_int4(data)
        info = np.iinfo(np_dtype)
        if data.size and (data.min() < info.min or data.max() > info.max):
            raise ConfigError(
                f"tensor {name!r}: data in [{data.min()}, {data.max()}] does not fit {dtype}"
            )
        return np.ascontiguousarray(data, dtype=np_dtype).tobytes()

    @staticmethod
    def _quantization(
        name: str,
        dims: list[int],
        scale: Sequence[float] | float,
        zero_point: Sequence[int] | int | None,
        quantized_dimension: int,
    ) -> schema.QuantizationParametersT:
        scales = [float(s) for s in _as_list(scale)]
        zero_points = [int(z) for z in _as_list(0 if zero_point is None else zero_point)]
        if not scales or not all(np.isfinite(s) and s > 0 for s in scales):
            raise ConfigError(f"tensor {name!r}: scales must be finite and > 0; got {scales}")
        if len(zero_points) == 1 and len(scales) > 1:
            zero_points = zero_points * len(scales)
        if len(zero_points) != len(scales):
            raise ConfigError(
                f"tensor {name!r}: {len(scales)} scales but {len(zero_points)} zero points"
            )
        if len(scales) > 1:
            if not 0 <= quantized_dimension < len(dims):
                raise ConfigError(
                    f"tensor {name!r}: quantized_dimension {quantized_dimension} is outside "
                    f"shape {dims}"
                )
            if len(scales) != dims[quantized_dimension]:
                raise ConfigError(
                    f"tensor {name!r}: {len(scales)} scales for dimension {quantized_dimension} "
                    f"of size {dims[quantized_dimension]} (shape {dims})"
                )
        return schema.QuantizationParametersT(
            scale=scales, zeroPoint=zero_points, quantizedDimension=int(quantized_dimension)
        )

    def add_operator(
        self,
        op: str,
        inputs: Sequence[int],
        outputs: Sequence[int],
        *,
        version: int = 1,
        **options: Any,
    ) -> None:
        """Append operator ``op`` (one of :data:`OPS`) reading ``inputs``, writing ``outputs``.

        Operators run in the order they are added. An optional input left out is ``-1``.
        ``version`` is the operator-code version (the runtime picks kernels by tensor types;
        version 1 resolves for every builtin). Options by op:

        - CONV_2D: ``padding`` ("SAME"/"VALID", default "VALID"), ``stride_h``, ``stride_w``,
          ``dilation_h``, ``dilation_w`` (default 1), ``fused_activation`` ("NONE", "RELU",
          "RELU6", "RELU_N1_TO_1"; default "NONE"); DEPTHWISE_CONV_2D: the same plus
          ``depth_multiplier`` (default 1);
        - AVERAGE_POOL_2D / MAX_POOL_2D: ``padding``, ``stride_h``, ``stride_w``, ``filter_h``,
          ``filter_w`` (required), ``fused_activation``;
        - ADD / SUB / MUL: ``fused_activation``; FULLY_CONNECTED: also ``keep_num_dims``;
        - SUM / MEAN: ``keep_dims`` (default False; the axes are the second input);
        - RESHAPE: ``new_shape`` (optional; the shape may instead be the second input);
        - CONCATENATION: ``axis`` (required), ``fused_activation``;
        - GATHER: ``axis`` (default 0; params first, indices second);
        - MAXIMUM, MINIMUM, GREATER_EQUAL, CAST, QUANTIZE, DEQUANTIZE, RELU, PAD, SLICE (begin
          and size are its second and third inputs): none;
        - CUSTOM (:data:`CUSTOM`): ``custom_code`` (required, the operator's name, e.g.
          ``"CLIMBQ_CONV_COUNT"``) and ``custom_options`` (bytes, default empty), stored as is.
        """
        if op not in _OPS and op != CUSTOM:
            raise ConfigError(f"operator {op!r} is not one of {', '.join(OPS)} or {CUSTOM}")
        where = f"operator {len(self._operators)} ({op})"
        ins = [int(i) for i in inputs]
        outs = [int(i) for i in outputs]
        for i in ins:
            if not -1 <= i < len(self._tensors):
                raise ConfigError(f"{where}: input tensor index {i} does not exist")
        for i in outs:
            if not 0 <= i < len(self._tensors):
                raise ConfigError(f"{where}: output tensor index {i} does not exist")
        if not isinstance(version, int) or version < 1:
            raise ConfigError(f"{where}: version must be an integer >= 1; got {version!r}")

        parsed = _Options(where, options)
        custom_code: str | None = None
        custom_options: bytes | None = None
        if op == CUSTOM:
            code, options_type, table = (
                schema.BuiltinOperator.CUSTOM,
                schema.BuiltinOptions.NONE,
                None,
            )
            custom_code = parsed.get("custom_code", required=True)
            custom_options = parsed.get("custom_options", b"")
            if not isinstance(custom_code, str) or not custom_code.isascii() or not custom_code:
                raise ConfigError(f"{where}: custom_code must be a non-empty ASCII name")
            if not isinstance(custom_options, bytes | bytearray):
                raise ConfigError(
                    f"{where}: custom_options must be bytes; got {type(custom_options).__name__}"
                )
        else:
            code, options_type, factory = _OPS[op]
            table = factory(parsed) if factory is not None else None
        parsed.finish()
        if op == "CAST":
            if len(ins) != 1 or len(outs) != 1 or ins[0] < 0:
                raise ConfigError(f"{where}: CAST takes one input and one output")
            table = schema.CastOptionsT(
                inDataType=self._tensors[ins[0]].type, outDataType=self._tensors[outs[0]].type
            )

        key = (int(code), version, custom_code)
        if key not in self._opcodes:
            self._opcodes[key] = len(self._opcodes)
        self._operators.append(
            schema.OperatorT(
                opcodeIndex=self._opcodes[key],
                inputs=ins,
                outputs=outs,
                builtinOptionsType=options_type if table is not None else 0,
                builtinOptions=table,
                customOptions=(
                    np.frombuffer(bytes(custom_options), np.uint8) if custom_options else None
                ),
            )
        )

    def set_io(self, inputs: Sequence[int], outputs: Sequence[int]) -> None:
        """Declare the subgraph's input and output tensors (in the interpreter's order)."""
        for role, indices in (("input", inputs), ("output", outputs)):
            for i in indices:
                if not 0 <= int(i) < len(self._tensors):
                    raise ConfigError(f"model {role} tensor index {i} does not exist")
        self._inputs = [int(i) for i in inputs]
        self._outputs = [int(i) for i in outputs]

    def dtype(self, index: int) -> str:
        """The dtype name (one of :data:`DTYPES`) of tensor ``index``."""
        kind = self._tensors[int(index)].type
        return next(name for name, (code, _) in _DTYPES.items() if code == kind)

    def open_batch(self, indices: Sequence[int]) -> None:
        """Mark axis 0 of the tensors ``indices`` (the model's inputs and outputs) as the
        open batch axis: ``shape_signature`` ``[-1, ...]`` beside the stored shape, as the
        TFLite converter writes a dynamic batch. The stored shape stays what the interpreter
        allocates first; ``ResizeInputTensor`` picks another batch."""
        for i in indices:
            if not 0 <= int(i) < len(self._tensors):
                raise ConfigError(f"tensor index {i} does not exist")
            tensor = self._tensors[int(i)]
            tensor.shapeSignature = [-1, *list(tensor.shape)[1:]]

    def add_metadata(self, name: str, data: bytes) -> None:
        """Store ``data`` in its own buffer, listed in ``Model.metadata`` under ``name``."""
        if any(entry.name == name for entry in self._metadata):
            raise ConfigError(f"metadata {name!r} is added twice")
        self._metadata.append(schema.MetadataT(name=name, buffer=len(self._buffers)))
        self._buffers.append(bytes(data))

    def build(self) -> bytes:
        """The ``.tflite`` file: a ``Model`` flatbuffer with file identifier ``TFL3``."""
        if self._inputs is None or self._outputs is None:
            raise ConfigError("call set_io(inputs, outputs) before build()")
        subgraph = schema.SubGraphT(
            tensors=self._tensors,
            inputs=self._inputs,
            outputs=self._outputs,
            operators=self._operators,
            name="main",
        )
        model = schema.ModelT(
            version=SCHEMA_VERSION,
            operatorCodes=[
                schema.OperatorCodeT(
                    deprecatedBuiltinCode=min(code, _PLACEHOLDER_FOR_GREATER_OP_CODES),
                    customCode=custom_code,
                    version=version,
                    builtinCode=code,
                )
                for (code, version, custom_code), _ in sorted(
                    self._opcodes.items(), key=lambda kv: kv[1]
                )
            ],
            subgraphs=[subgraph],
            description=self.description,
            buffers=[_AlignedBufferT(payload) for payload in self._buffers],
            metadata=self._metadata or None,
        )
        return pack_model(model)


def pack_model(model: schema.ModelT) -> bytes:
    """The ``.tflite`` bytes of ``model`` (file identifier ``TFL3``), every buffer's data
    :data:`BUFFER_ALIGNMENT`-aligned: for a model built here or one read with
    ``ModelT.InitFromPackedBuf`` and edited (its plain buffers are re-wrapped)."""
    buffers = []
    for b in model.buffers or []:
        if not isinstance(b, _AlignedBufferT):
            data = getattr(b, "data", None)
            b = _AlignedBufferT(None if data is None or len(data) == 0 else bytes(data))
        buffers.append(b)
    model.buffers = buffers
    size = sum(len(b.payload) + BUFFER_ALIGNMENT for b in buffers if b.payload is not None)
    builder = flatbuffers.Builder(size + 4096)
    builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())
