"""How a photo's tower features are stored: int8 in blocks of 32 values, each block with its own scale.

The learned fusion reads the offline towers' 1,664 features of each candidate (pooled CNN features in
[0, ~6] and a unit ConSE vector of values near ±0.1): one scale per row would flatten the ConSE part,
so each block of 32 gets its own (the Q8_0 layout of llama.cpp). 1,776 bytes instead of float16's
3,328; the fusion's linear projection of the decoded features keeps a cosine of 0.99999 to the exact
one (benchmarks/RESULTS.md). Blobs written before (plain float16, 2 bytes a value) still decode.

Layout: b"Q8_0" | uint32 value count n | float16 scale per block | int8 codes (blocks padded to 32).
"""

from __future__ import annotations

import numpy as np

__all__ = ["BLOCK", "MAGIC", "encode_features", "decode_features", "encoded_size"]

MAGIC = b"Q8_0"
BLOCK = 32
_HEADER = len(MAGIC) + 4


def encoded_size(n: int) -> int:
    """Bytes of one encoded row of n values."""
    blocks = -(-n // BLOCK)
    return _HEADER + blocks * (2 + BLOCK)


def encode_features(features: np.ndarray) -> bytes:
    """One row of features (n,) -> blob."""
    x = np.asarray(features, dtype=np.float32).ravel()
    n = len(x)
    blocks = -(-n // BLOCK)
    flat = np.zeros(blocks * BLOCK, dtype=np.float32)
    flat[:n] = x
    rows = flat.reshape(blocks, BLOCK)
    scale = (np.abs(rows).max(axis=1) / 127.0).astype("<f2")
    safe = np.where(scale > 0, scale.astype(np.float32), 1.0)  # an all-zero block stays zero
    codes = np.clip(np.rint(rows / safe[:, None]), -127, 127).astype(np.int8)
    return MAGIC + np.uint32(n).astype("<u4").tobytes() + scale.tobytes() + codes.tobytes()


def decode_features(blob: bytes) -> np.ndarray:
    """Blob -> float32 row (n,); float16 blobs of older indexes are read as they are."""
    if blob[: len(MAGIC)] == MAGIC and len(blob) >= _HEADER:
        n = int(np.frombuffer(blob, dtype="<u4", count=1, offset=len(MAGIC))[0])
        if len(blob) == encoded_size(n):
            blocks = -(-n // BLOCK)
            scale = np.frombuffer(blob, dtype="<f2", count=blocks, offset=_HEADER).astype(np.float32)
            codes = np.frombuffer(blob, dtype=np.int8, offset=_HEADER + 2 * blocks).reshape(blocks, BLOCK)
            return (codes.astype(np.float32) * scale[:, None]).ravel()[:n]
    return np.frombuffer(blob, dtype="<f2").astype(np.float32)
