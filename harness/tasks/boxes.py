"""Box helpers shared by the detector decode (NMS) and the detection evaluation: one IoU for both."""

from __future__ import annotations

import numpy as np


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box against [N, 4] xyxy boxes -> [N]; 0 where the union is empty."""
    box = np.asarray(box, dtype=np.float64)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = lambda b: np.prod(np.clip(b[..., 2:] - b[..., :2], 0, None), axis=-1)  # noqa: E731
    union = area(box) + area(boxes) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def points_in_box(pts: np.ndarray, box: np.ndarray) -> np.ndarray:
    """[N, 2] points -> [N] bool, True where the point lies inside the xyxy box (edges included)."""
    pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    return np.all((pts >= box[:2]) & (pts <= box[2:]), axis=1)
