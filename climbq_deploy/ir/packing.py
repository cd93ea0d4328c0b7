"""Bit packing of unsigned low-bit integer codes (part of the ``.climbq`` file format).

Layout (a file format; do not change it without bumping the artifact schema version):

* The codes are flattened in C (row-major) order: code ``i`` is ``codes.reshape(-1)[i]``.
* Each code takes exactly ``bits`` bits (``1 <= bits <= 8``); code ``i`` occupies bit positions
  ``i*bits .. i*bits + bits - 1`` of one little-endian bit stream, least significant bit of the
  code first.
* Bit position ``p`` of the stream is bit ``p % 8`` (value ``1 << (p % 8)``) of byte ``p // 8``.
* The packed array is ``ceil(size * bits / 8)`` bytes long; the unused high bits of the last byte
  (the padding) are zero, and :func:`unpack_bits` refuses data whose padding is not zero.

Example: 2-bit codes ``[1, 2, 3, 0, 1]`` pack to bytes ``[0b00111001, 0b00000001]``.

The shape is not stored in the packed bytes; the artifact manifest records it.
"""

from __future__ import annotations

import math

import numpy as np

from climbq_deploy.errors import ArtifactError

__all__ = ["pack_bits", "packed_nbytes", "unpack_bits"]


def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer) or not 1 <= bits <= 8:
        raise ArtifactError(f"bit width must be an integer in 1..8, got {bits!r}")


def packed_nbytes(size: int, bits: int) -> int:
    """Number of bytes that ``size`` codes of ``bits`` bits pack into: ``ceil(size*bits/8)``."""
    _check_bits(bits)
    return (int(size) * int(bits) + 7) // 8


def pack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack unsigned integer ``codes`` (any shape, values in ``0 .. 2**bits - 1``) into bytes.

    Returns a 1-D ``uint8`` array of ``ceil(codes.size * bits / 8)`` bytes laid out as described
    in the module docstring. Raises :class:`ArtifactError` for a bit width outside 1..8, a
    non-integer dtype (bool included) or a code outside the allowed range.
    """
    _check_bits(bits)
    codes = np.asarray(codes)
    if codes.dtype.kind not in "iu":
        raise ArtifactError(f"codes must have an integer dtype to pack, got {codes.dtype}")
    flat = codes.reshape(-1)
    high = (1 << bits) - 1
    bad = np.flatnonzero((flat < 0) | (flat > high))
    if bad.size:
        index = np.unravel_index(int(bad[0]), codes.shape) if codes.ndim else ()
        raise ArtifactError(
            f"code {flat[bad[0]]} at index {tuple(int(i) for i in index)} is outside the "
            f"{bits}-bit range 0..{high} ({bad.size} codes out of range)"
        )
    # (n, 8) little-endian bit matrix -> keep the low `bits` columns -> one bit stream.
    bit_matrix = np.unpackbits(flat.astype(np.uint8)[:, None], axis=1, bitorder="little")
    return np.packbits(bit_matrix[:, :bits].reshape(-1), bitorder="little")


def unpack_bits(data: np.ndarray, bits: int, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`pack_bits`: decode ``uint8`` ``data`` into ``uint8`` codes of ``shape``.

    ``data`` must hold exactly ``ceil(prod(shape) * bits / 8)`` bytes with zero padding bits;
    otherwise :class:`ArtifactError` says what was expected and what was found.
    """
    _check_bits(bits)
    if any(isinstance(d, bool) or not isinstance(d, int | np.integer) or d < 0 for d in shape):
        raise ArtifactError(f"shape must be a tuple of non-negative integers, got {shape!r}")
    shape = tuple(int(d) for d in shape)
    data = np.asarray(data)
    if data.dtype != np.uint8:
        raise ArtifactError(f"packed data must have dtype uint8, got {data.dtype}")
    size = math.prod(shape)
    expected = packed_nbytes(size, bits)
    if data.size != expected:
        raise ArtifactError(
            f"packed data for shape {shape} at {bits} bits must be {expected} bytes, "
            f"got {data.size} bytes"
        )
    stream = np.unpackbits(data.reshape(-1), bitorder="little")
    if stream[size * bits :].any():
        raise ArtifactError(
            f"packed data for shape {shape} at {bits} bits has nonzero padding bits "
            f"in its last byte (0x{int(data.reshape(-1)[-1]):02x})"
        )
    bit_matrix = stream[: size * bits].reshape(size, bits)
    # packbits pads each row to 8 bits with zeros, giving one byte per code.
    codes = np.packbits(bit_matrix, axis=1, bitorder="little").reshape(size)
    return codes.reshape(shape)
