"""Bit packing: exact byte layout, round trips, and refusals."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes

from climbq_deploy.errors import ArtifactError
from climbq_deploy.ir.packing import pack_bits, packed_nbytes, unpack_bits


def loop_pack(codes: list[int], bits: int) -> bytes:
    """Independent golden: write each code's bits one at a time into a little-endian stream."""
    out = bytearray((len(codes) * bits + 7) // 8)
    for i, code in enumerate(codes):
        for j in range(bits):
            if (code >> j) & 1:
                p = i * bits + j
                out[p // 8] |= 1 << (p % 8)
    return bytes(out)


def test_two_bit_example_has_the_documented_bytes() -> None:
    # bits 0-1: 1 -> 1,0; bits 2-3: 2 -> 0,1; bits 4-5: 3 -> 1,1; bits 6-7: 0; bit 8: 1.
    packed = pack_bits(np.array([1, 2, 3, 0, 1]), 2)
    assert packed.dtype == np.uint8 and packed.ndim == 1
    assert packed.tolist() == [0b00111001, 0b00000001]


def test_three_bit_codes_straddle_a_byte_boundary() -> None:
    # 5=101 -> bits 0..2 = 1,0,1; 7 -> bits 3..5 = 1,1,1; 2=010 -> bit 6 = 0, bit 7 = 1, bit 8 = 0.
    packed = pack_bits(np.array([[5, 7, 2]], dtype=np.uint16), 3)
    assert packed.tolist() == [0b10111101, 0b00000000]
    np.testing.assert_array_equal(unpack_bits(packed, 3, (1, 3)), [[5, 7, 2]])


def test_eight_bit_packing_is_the_identity_and_one_bit_is_packbits() -> None:
    codes = np.arange(256, dtype=np.int64).reshape(16, 16)
    assert pack_bits(codes, 8).tobytes() == bytes(range(256))
    bools = np.array([1, 0, 0, 0, 0, 0, 0, 1, 1])
    assert pack_bits(bools, 1).tolist() == [0b10000001, 0b00000001]


@given(
    bits=st.integers(1, 8),
    shape=array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6),
    seed=st.integers(0, 2**32 - 1),
)
def test_round_trip_and_layout_match_a_plain_loop(bits: int, shape: tuple, seed: int) -> None:
    codes = np.random.default_rng(seed).integers(0, 2**bits, size=shape, dtype=np.int32)
    packed = pack_bits(codes, bits)
    assert packed.dtype == np.uint8 and packed.shape == (packed_nbytes(codes.size, bits),)
    assert packed.tobytes() == loop_pack(codes.reshape(-1).tolist(), bits)
    back = unpack_bits(packed, bits, shape)
    assert back.dtype == np.uint8 and back.shape == shape
    np.testing.assert_array_equal(back, codes)


@pytest.mark.parametrize("shape", [(0,), (3, 0), (1,), (1, 1, 1), ()])
def test_empty_and_single_element_shapes(shape: tuple) -> None:
    codes = np.full(shape, 5, dtype=np.uint8)
    packed = pack_bits(codes, 3)
    assert packed.size == (0 if codes.size == 0 else 1)
    np.testing.assert_array_equal(unpack_bits(packed, 3, shape), codes)
    assert unpack_bits(packed, 3, shape).shape == shape


@pytest.mark.parametrize("bits", [0, 9, -1, 2.0, True])
def test_bit_width_outside_one_to_eight_is_refused(bits) -> None:
    with pytest.raises(ArtifactError, match=r"bit width must be an integer in 1\.\.8"):
        pack_bits(np.zeros(3, dtype=np.uint8), bits)
    with pytest.raises(ArtifactError, match=r"bit width must be an integer in 1\.\.8"):
        unpack_bits(np.zeros(3, dtype=np.uint8), bits, (3,))


def test_out_of_range_codes_name_the_value_and_range() -> None:
    with pytest.raises(
        ArtifactError, match=r"code 4 at index \(1, 0\) is outside the 2-bit range 0\.\.3"
    ):
        pack_bits(np.array([[0, 1], [4, 3]]), 2)
    with pytest.raises(ArtifactError, match=r"code -1 .* range 0\.\.15"):
        pack_bits(np.array([-1, 2], dtype=np.int8), 4)


@pytest.mark.parametrize("codes", [np.array([0.0, 1.0]), np.array([True, False])])
def test_non_integer_dtype_is_refused(codes: np.ndarray) -> None:
    with pytest.raises(ArtifactError, match=r"integer dtype"):
        pack_bits(codes, 2)


def test_wrong_data_length_says_expected_and_got() -> None:
    packed = pack_bits(np.arange(8) % 8, 3)  # 24 bits -> 3 bytes
    with pytest.raises(ArtifactError, match=r"must be 3 bytes, got 2 bytes"):
        unpack_bits(packed[:2], 3, (8,))
    with pytest.raises(ArtifactError, match=r"must be 2 bytes, got 3 bytes"):
        unpack_bits(packed, 3, (5,))


def test_nonzero_padding_bits_are_refused() -> None:
    packed = pack_bits(np.array([1, 2, 3, 0, 1]), 2).copy()
    packed[-1] |= 0b10000000
    with pytest.raises(ArtifactError, match=r"nonzero padding bits"):
        unpack_bits(packed, 2, (5,))


def test_bad_data_dtype_and_shape_are_refused() -> None:
    with pytest.raises(ArtifactError, match=r"dtype uint8"):
        unpack_bits(np.zeros(2, dtype=np.int16), 8, (2,))
    with pytest.raises(ArtifactError, match=r"non-negative integers"):
        unpack_bits(np.zeros(2, dtype=np.uint8), 8, (-2,))
