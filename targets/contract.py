"""The model contract of an exported ``.tflite`` / ``.onnx``: uint8 NHWC images in, float32
logits out, and the record of it that travels in the file.

**The input step inside the graph, exactly.** The program's first node
(:class:`~climbq_deploy.ir.graph.InputQuant`) maps a pixel ``p`` (uint8) of channel ``c`` to
the integer input ``I = round_half_even((p / 255 - mean_c) / std_c / step)``. A pixel takes
only 256 values per channel, so the whole map is a table of ``256 C`` integers, computed at
export by :func:`climbq_deploy.kernels.ops.input_quant` itself (float64, the reference's
own kernel: equal by construction, :func:`input_table`). The model then computes, per element
of the ``(N, H, W, C)`` image,

    ``I[n, y, x, c] = T[p[n, y, x, c] * C + c]``

with integer ops only: CAST uint8 to int32, MUL by ``C``, ADD the channel index ``c``
(broadcast along the last axis), GATHER from ``T`` (axis 0). Every index lies in
``[0, 256 C)``; no rounding happens anywhere, so the model reads exactly the ``I`` the NumPy
reference computes from the same image.

**What travels in the file** (:func:`contract`): a JSON object under the key
:data:`CONTRACT_KEY` (TFLite: a ``Model.metadata`` entry; ONNX: ``metadata_props``) naming the
input (name, dtype, layout, shape with ``-1`` for the open batch axis, quantization parameters:
none, raw pixel values; the normalisation and that the model applies it) and the output (name,
dtype float32, shape, no quantization, meaning, class names where the program records them).
:data:`INPUT_FORMS` are the export choices: ``uint8`` (default, the contract above) or
``int32``, the earlier form that reads the host-quantized ``I``.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from climbq_deploy.errors import ArtifactError, ConfigError, DataError
from climbq_deploy.ir.graph import Graph, InputQuant
from climbq_deploy.kernels import ops
from climbq_deploy.targets.base import option

__all__ = [
    "CONTRACT_KEY",
    "CONTRACT_VERSION",
    "IMAGE_INPUT",
    "INPUT_FORMS",
    "LOGITS",
    "as_images",
    "contract",
    "contract_json",
    "input_node",
    "input_option",
    "input_table",
    "parse_contract",
]

CONTRACT_KEY = "climbq_contract"
CONTRACT_VERSION = 1
INPUT_FORMS = ("uint8", "int32")
IMAGE_INPUT = "image"  # the uint8 input tensor's name in both formats
LOGITS = "logits"


def input_option() -> Any:
    """The ``input`` export option of the TFLite and TensorRT targets (``--input``)."""
    return option(
        "uint8",
        choices=INPUT_FORMS,
        help="model input: uint8 NHWC images, normalised inside the model (exact); or int32, "
        "the earlier form reading the integer input I quantized on the host",
        stage="export",
    )


def check_input_form(form: str) -> None:
    """ConfigError unless ``form`` is one of :data:`INPUT_FORMS`."""
    if form not in INPUT_FORMS:
        raise ConfigError(f"input must be one of {INPUT_FORMS}, got {form!r}")


def as_images(images: np.ndarray) -> np.ndarray:
    """``images`` as the uint8 NHWC array a uint8-input model reads (C-contiguous); integer
    arrays of other dtypes are taken when every value lies in ``[0, 255]`` (a cast would
    wrap the others silently), anything else is a DataError naming the range or dtype."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return np.ascontiguousarray(images)
    if not np.issubdtype(images.dtype, np.integer):
        raise DataError(f"images must be uint8 pixels, got dtype {images.dtype}")
    if images.size and (images.min() < 0 or images.max() > 255):
        raise DataError(
            f"images must be pixels in [0, 255], got values in [{images.min()}, {images.max()}]"
        )
    return np.ascontiguousarray(images, np.uint8)


def input_node(graph: Graph) -> InputQuant:
    """The program's :class:`InputQuant` (the validator guarantees exactly one)."""
    return next(n for n in graph.nodes if isinstance(n, InputQuant))


def input_table(graph: Graph) -> np.ndarray:
    """``T``, int32 of ``256 C`` entries: ``T[p C + c] = I`` of pixel value ``p`` in channel
    ``c``, i.e. ``round_half_even((p / 255 - mean_c) / std_c / step)`` in float64.

    Computed by :func:`~climbq_deploy.kernels.ops.input_quant` on the image whose row ``p``
    holds the value ``p`` in every channel, so ``T`` is the reference's own map, value for
    value (it raises where an ``I`` leaves int32)."""
    node = input_node(graph)
    channels = graph.tensors[node.output].shape[-1]
    pixels = np.repeat(np.arange(256, dtype=np.uint8)[:, None], channels, axis=1)
    values = ops.input_quant(pixels[None, None], node.mean, node.std, node.step)
    return np.ascontiguousarray(values.reshape(256 * channels), np.int32)


def contract(
    graph: Graph,
    *,
    form: str,
    input_name: str,
    input_dtype: str,
    layout: str,
    notes: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The contract of a model of ``graph`` whose input is ``input_name`` (``input_dtype``,
    ``layout`` NHWC or NCHW) under input form ``form``; ``notes``: target-specific lines
    (how to open the batch axis)."""
    check_input_form(form)
    node = input_node(graph)
    h, w, c = graph.tensors[node.output].shape
    shape = [-1, h, w, c] if layout == "NHWC" else [-1, c, h, w]
    classes = graph.tensors[graph.output].shape[-1]
    normalisation: dict[str, Any] = {
        "mean": [float(v) for v in node.mean],
        "std": [float(v) for v in node.std],
    }
    if form == "uint8":
        value = {
            "values": "raw pixels 0..255 (RGB order of the training images)",
            "normalization": {
                **normalisation,
                "applied": "inside the model, exactly (a 256 x C table)",
                "formula": "I = round_half_even((p / 255 - mean_c) / std_c / step)",
                "step": node.step,
            },
        }
    else:
        value = {
            "values": "the integer input I, quantized on the host from uint8 pixels p",
            "normalization": {
                **normalisation,
                "applied": "on the host, before the model",
                "formula": "I = round_half_even((p / 255 - mean_c) / std_c / step)",
                "step": node.step,
            },
        }
    meta = graph.meta or {}
    names = meta.get("class_names")
    record: dict[str, Any] = {
        "version": CONTRACT_VERSION,
        "input": {
            "name": input_name,
            "dtype": input_dtype,
            "layout": layout,
            "shape": shape,
            "quantization": None,  # raw values: no scale or zero point on the tensor
            **value,
        },
        "output": {
            "name": LOGITS,
            "dtype": "float32",
            "shape": [-1, classes],
            "quantization": None,
            "meaning": "logits (unnormalised class scores); argmax over axis 1 is the class",
            "class_names": [str(n) for n in names] if isinstance(names, list | tuple) else None,
        },
        "batch": "-1 in a shape is the batch axis N (any N >= 1)",
        "program": {k: meta[k] for k in ("arch", "method", "wbits", "abits") if k in meta},
    }
    if notes:
        record["notes"] = dict(notes)
    return record


def contract_json(record: dict[str, Any]) -> str:
    """``record`` as compact, key-sorted JSON (the bytes stored in the file)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


def parse_contract(text: str | bytes, where: object = "model") -> dict[str, Any]:
    """The contract stored in a file, checked for the fields the runners read
    (``input.name``, ``input.dtype``, ``input.layout``); ArtifactError otherwise."""
    try:
        record = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise ArtifactError(f"{where}: the {CONTRACT_KEY} metadata is not JSON") from None
    given = record.get("input") if isinstance(record, dict) else None
    if not isinstance(given, dict) or not all(
        isinstance(given.get(k), str) for k in ("name", "dtype", "layout")
    ):
        raise ArtifactError(f"{where}: the {CONTRACT_KEY} metadata has no input name/dtype/layout")
    return record
