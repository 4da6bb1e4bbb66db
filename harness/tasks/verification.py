"""Verification embedding postprocess, and MobileFaceNet's FIXED batch of 2 (baked into the graph)."""

from __future__ import annotations

import numpy as np

from harness.errors import InputError


def l2_normalize(emb: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows to unit length (float32), so a dot product is the cosine similarity."""
    emb = np.asarray(emb, np.float32)
    return emb / np.maximum(np.linalg.norm(emb, axis=-1, keepdims=True), eps)


def pad_batch(batch: np.ndarray, size: int = 2) -> tuple[np.ndarray, int]:
    """[n, ...] inputs with n <= size -> ([size, ...], n), padding by repeating the last input.

    Repeating a real face (not zeros) keeps padded rows on the same numeric path, so nothing odd enters
    calibration statistics or timing.
    """
    n = len(batch)
    if not 1 <= n <= size:
        raise InputError(f"verification: batch of {n} does not fit the model's fixed batch of {size}")
    if n == size:
        return batch, n
    return np.concatenate([batch, np.repeat(batch[-1:], size - n, axis=0)]), n


def split_batch(out: np.ndarray, n: int) -> np.ndarray:
    """Drop the padded rows from a fixed-batch output: the first n rows."""
    return np.asarray(out)[:n]
