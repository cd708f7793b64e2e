"""Deep Compression's storage of a shared-weight kernel (Han et al., 2016, sections 2 and 4).

The kernel, flattened in row-major order, is stored as its non-zero entries only: for each,
the gap from the previous stored entry (relative index, ``index_bits`` wide, so gaps 1 to
``2**index_bits``) and its ``bits``-wide weight code. When a gap exceeds what the index can
hold, filler entries with code 0 (the weight zero) are stored ``2**index_bits`` apart. Both
streams are then Huffman coded. ``encode_kernel`` returns the streams and the size figures;
``decode_kernel`` restores the index array exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kcnn.compress import huffman

FLOAT_BITS = 32  # codebook entries and unshared weights (biases) are float32


@dataclass
class EncodedKernel:
    shape: tuple
    bits: int
    index_bits: int
    entries: int  # stored entries, fillers included
    fillers: int
    gap_lengths: np.ndarray  # Huffman code lengths of the gap symbols (gap - 1)
    code_lengths: np.ndarray  # Huffman code lengths of the weight codes
    gap_stream: bytes
    code_stream: bytes
    gap_bits: int = 0  # Huffman-coded stream lengths in bits (the streams are padded to whole bytes)
    code_bits: int = 0

    @property
    def raw_bits(self) -> int:
        """Sparse storage before Huffman: every entry takes index_bits + bits."""
        return self.entries * (self.index_bits + self.bits)

    @property
    def huffman_bits(self) -> int:
        return self.gap_bits + self.code_bits

    @property
    def table_bits(self) -> int:
        """The Huffman tables: one byte per symbol's code length, for both alphabets."""
        return 8 * (self.gap_lengths.size + self.code_lengths.size)

    @property
    def codebook_bits(self) -> int:
        return (2 ** self.bits - 1) * FLOAT_BITS  # code 0 is the weight zero and is not stored


def relative_entries(flat_index: np.ndarray, index_bits: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(gaps, codes, fillers): the stored entries of a flattened code array, fillers included."""
    span = 2 ** index_bits
    positions = np.flatnonzero(flat_index)
    gaps = np.diff(positions, prepend=-1)
    fillers_before = (gaps - 1) // span
    count = fillers_before + 1
    last = np.cumsum(count) - 1  # where each real entry lands among all entries
    all_gaps = np.full(int(count.sum()), span, dtype=np.int64)
    all_gaps[last] = gaps - fillers_before * span
    all_codes = np.zeros(all_gaps.size, dtype=np.int64)
    all_codes[last] = flat_index[positions]
    return all_gaps, all_codes, int(fillers_before.sum())


def encode_kernel(index: np.ndarray, bits: int, index_bits: int = 8) -> EncodedKernel:
    if not 1 <= index_bits <= 16:
        raise ValueError(f"index_bits must be between 1 and 16, got {index_bits}")
    gaps, codes, fillers = relative_entries(np.asarray(index).ravel().astype(np.int64), index_bits)
    gap_symbols = gaps - 1
    gap_lengths = huffman.code_lengths(np.bincount(gap_symbols, minlength=2 ** index_bits))
    code_lengths = huffman.code_lengths(np.bincount(codes, minlength=2 ** bits))
    return EncodedKernel(tuple(int(d) for d in np.shape(index)), bits, index_bits, int(gaps.size), fillers,
                         gap_lengths, code_lengths, huffman.encode(gap_symbols, gap_lengths),
                         huffman.encode(codes, code_lengths), huffman.encoded_bits(gap_symbols, gap_lengths),
                         huffman.encoded_bits(codes, code_lengths))


def decode_kernel(encoded: EncodedKernel) -> np.ndarray:
    """The code array (kernel shape) the streams describe."""
    gaps = huffman.decode(encoded.gap_stream, encoded.gap_lengths, encoded.entries) + 1
    codes = huffman.decode(encoded.code_stream, encoded.code_lengths, encoded.entries)
    size = int(np.prod(encoded.shape))
    positions = np.cumsum(gaps) - 1
    if positions.size and positions[-1] >= size:
        raise ValueError("the relative indices run past the end of the kernel; the artefact is damaged")
    flat = np.zeros(size, dtype=np.uint16 if encoded.bits > 8 else np.uint8)
    flat[positions] = codes
    return flat.reshape(encoded.shape)
