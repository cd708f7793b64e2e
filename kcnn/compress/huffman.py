"""Canonical Huffman coding of small-alphabet symbol streams, vectorised with numpy.

``code_lengths(counts)`` builds the optimal prefix code's lengths from symbol counts;
``encode(symbols, lengths)`` packs the stream into bytes; ``decode(data, lengths, count)`` reads
it back. Codes are canonical (assigned in order of length, then symbol), so the lengths alone
describe the code: that is all a file needs to store beside the bits.
"""

from __future__ import annotations

import heapq

import numpy as np


def code_lengths(counts) -> np.ndarray:
    """Huffman code length per symbol (0 for symbols that never occur; 1 when only one does)."""
    counts = np.asarray(counts, dtype=np.int64)
    lengths = np.zeros(len(counts), dtype=np.int64)
    present = np.flatnonzero(counts)
    if len(present) == 1:
        lengths[present] = 1
        return lengths
    heap = [(int(counts[s]), int(s), [int(s)]) for s in present]
    heapq.heapify(heap)
    while len(heap) > 1:
        count_a, tie_a, members_a = heapq.heappop(heap)
        count_b, tie_b, members_b = heapq.heappop(heap)
        lengths[members_a + members_b] += 1
        heapq.heappush(heap, (count_a + count_b, min(tie_a, tie_b), members_a + members_b))
    return lengths


def canonical_codes(lengths) -> np.ndarray:
    """The canonical code (an integer read on ``lengths[s]`` bits) of each symbol."""
    lengths = np.asarray(lengths, dtype=np.int64)
    codes = np.zeros(len(lengths), dtype=np.int64)
    code = 0
    previous = 0
    for symbol in sorted(np.flatnonzero(lengths), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[symbol]) - previous
        codes[symbol] = code
        previous = int(lengths[symbol])
        code += 1
    return codes


def encoded_bits(symbols, lengths) -> int:
    return int(np.asarray(lengths, dtype=np.int64)[np.asarray(symbols, dtype=np.int64)].sum())


def encode(symbols, lengths) -> bytes:
    """Pack ``symbols`` with the canonical code of ``lengths``, most significant bit first."""
    symbols = np.asarray(symbols, dtype=np.int64).ravel()
    lengths = np.asarray(lengths, dtype=np.int64)
    if symbols.size and np.any(lengths[symbols] == 0):
        raise ValueError("a symbol to encode has no code (length 0)")
    codes = canonical_codes(lengths)[symbols]
    sizes = lengths[symbols]
    owner = np.repeat(np.arange(symbols.size), sizes)
    position = np.arange(owner.size) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    bits = (codes[owner] >> (sizes[owner] - 1 - position)) & 1
    return np.packbits(bits.astype(np.uint8)).tobytes()


def decode(data: bytes, lengths, count: int) -> np.ndarray:
    """The ``count`` symbols packed in ``data`` with the canonical code of ``lengths``."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    longest = int(lengths.max())
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8)).astype(np.int64)
    bits = np.concatenate([bits, np.zeros(longest, dtype=np.int64)])
    total = bits.size - longest
    window = np.zeros(total, dtype=np.int64)  # the `longest` bits starting at every position
    for offset in range(longest):
        window = (window << 1) | bits[offset:offset + total]
    codes = canonical_codes(lengths)
    symbol_at = np.full(total, -1, dtype=np.int64)
    length_at = np.zeros(total, dtype=np.int64)
    for size in range(1, longest + 1):  # canonical codes of one length are consecutive integers
        members = np.flatnonzero(lengths == size)
        if not members.size:
            continue
        members = members[np.argsort(codes[members], kind="stable")]
        prefix = window >> (longest - size)
        slot = prefix - codes[members[0]]
        hit = (symbol_at < 0) & (slot >= 0) & (slot < members.size)
        symbol_at[hit] = members[slot[hit]]
        length_at[hit] = size
    symbols, steps = symbol_at.tolist(), length_at.tolist()
    out = np.empty(count, dtype=np.int64)
    position = 0
    for i in range(count):  # follow the chain of code starts
        if position >= total or steps[position] == 0:
            raise ValueError("Huffman stream ended early or holds a code not in the table")
        out[i] = symbols[position]
        position += steps[position]
    return out
