"""BlazeFace (MediaPipe short-range / "front" 128x128) output decoding: SSD anchors, regressors, weighted NMS.

Both raw output conventions decode here, told apart by shape, not by name (names change with every conversion):
- the TFLite original: regressors [1, 896, 16], classificators [1, 896, 1];
- the barracuda ONNX export: scores [1, 512, 1] + [1, 384, 1] and boxes [1, 512, 16] + [1, 384, 16]
  (names Identity:0 .. Identity_3:0), split by feature map: 512 = 16x16x2 at stride 8, 384 = 8x8x6 at stride 16.
Scores are logits in both. Regressor row: x_c, y_c, w, h, then 6 keypoints (x, y), all in input pixels (128)
relative to the anchor centre. Keypoints: 0 eye on the image's left (subject's right), 1 other eye, 2 nose tip,
3 mouth centre, 4 and 5 ears.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping, Sequence

import numpy as np

from harness.errors import InputError
from harness.tasks.boxes import box_iou
from harness.tasks.preprocess import Letterbox

NUM_KEYPOINTS = 6
NUM_COORDS = 4 + 2 * NUM_KEYPOINTS
SCORE_CLIP = 100.0               # MediaPipe score_clipping_thresh: keeps exp() finite for saturated (int8) logits
SCORE_THRESHOLD = 0.5            # MediaPipe min_score_thresh for the short-range model
MIN_SUPPRESSION_THRESHOLD = 0.3  # MediaPipe NonMaxSuppression min_suppression_threshold (IoU)


@dataclass(frozen=True, eq=False)  # eq=False: == on numpy fields is ambiguous; detections compare by identity
class Detection:
    """One face: box [x0, y0, x1, y1] and keypoints [6, 2] in image pixels, score in [0, 1]."""

    box: np.ndarray
    score: float
    keypoints: np.ndarray

    @property
    def eyes(self) -> np.ndarray:
        """[2, 2]: image-left eye, image-right eye."""
        return self.keypoints[:2]

    @property
    def area(self) -> float:
        return float(max(self.box[2] - self.box[0], 0.0) * max(self.box[3] - self.box[1], 0.0))


@lru_cache(maxsize=8)
def ssd_anchors(input_size: int = 128, strides: tuple[int, ...] = (8, 16, 16, 16),
                anchors_per_layer: int = 2, offset: float = 0.5) -> np.ndarray:
    """Anchor centres [N, 2] (x, y) in [0, 1], in MediaPipe SsdAnchorsCalculator order.

    With fixed_anchor_size every anchor has size 1, so only the centres matter. Consecutive layers with the same
    stride share one feature map and their anchors interleave per cell, as MediaPipe does: the front model's
    (8, 16, 16, 16) gives 16x16 cells x 2 then 8x8 cells x 6 = 896 (aspect ratio 1.0 plus the interpolated scale
    give the 2 anchors per layer).
    """
    centres = []
    i = 0
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        grid = int(np.ceil(input_size / strides[i]))
        ys, xs = np.meshgrid((np.arange(grid) + offset) / grid, (np.arange(grid) + offset) / grid, indexing="ij")
        cells = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(cells, anchors_per_layer * (j - i), axis=0))
        i = j
    out = np.concatenate(centres, axis=0)
    out.flags.writeable = False
    return out


def _split_outputs(outputs: Mapping[str, np.ndarray] | Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Raw outputs (either convention) -> (regressors [N, 16], logits [N]) concatenated in anchor order."""
    arrays = list(outputs.values()) if isinstance(outputs, Mapping) else list(outputs)
    scores, boxes = [], []
    for a in arrays:
        a = np.asarray(a, dtype=np.float32)
        a = a.reshape(-1, a.shape[-1]) if a.ndim else a
        if a.ndim == 2 and a.shape[1] == 1:
            scores.append(a[:, 0])
        elif a.ndim == 2 and a.shape[1] == NUM_COORDS:
            boxes.append(a)
        else:
            raise InputError(f"blazeface: unexpected raw output shape {np.shape(a)}; "
                             f"want [1, N, 1] scores and [1, N, {NUM_COORDS}] boxes")
    # The finest feature map (stride 8, most anchors) comes first in anchor order; sorting by size makes the
    # concatenation independent of how a runtime orders or names its outputs.
    scores.sort(key=len, reverse=True)
    boxes.sort(key=len, reverse=True)
    if not scores or [len(s) for s in scores] != [len(b) for b in boxes]:
        raise InputError(f"blazeface: score outputs {[len(s) for s in scores]} and box outputs "
                         f"{[len(b) for b in boxes]} do not pair up")
    return np.concatenate(boxes), np.concatenate(scores)


def decode_raw(regressors: np.ndarray, logits: np.ndarray, anchors: np.ndarray,
               input_size: int = 128) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> boxes [N, 4] xyxy and keypoints [N, 6, 2] in input pixels, scores [N] (sigmoid of clipped logits)."""
    if len(regressors) != len(anchors):
        raise InputError(f"blazeface: {len(regressors)} anchors in the outputs, {len(anchors)} expected")
    r = regressors.astype(np.float64) / input_size           # offsets are in input px; work in [0, 1]
    centre = r[:, :2] + anchors
    half = r[:, 2:4] / 2
    boxes = np.concatenate([centre - half, centre + half], axis=1) * input_size
    kps = (r[:, 4:].reshape(-1, NUM_KEYPOINTS, 2) + anchors[:, None, :]) * input_size
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -SCORE_CLIP, SCORE_CLIP)))
    return boxes, kps, scores


def weighted_nms(boxes: np.ndarray, kps: np.ndarray, scores: np.ndarray,
                 iou_threshold: float = MIN_SUPPRESSION_THRESHOLD) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """MediaPipe WEIGHTED non-max suppression.

    Take the best remaining candidate; every remaining candidate overlapping it by IoU > threshold (itself
    included) joins its cluster; the output box and keypoints are the score-weighted mean of the cluster, the
    score is the best one's. Averaging steadies keypoints that a single anchor would jitter.
    """
    order = np.argsort(-scores, kind="stable")
    out = []
    while order.size:
        overlap = box_iou(boxes[order[0]], boxes[order]) > iou_threshold
        overlap[0] = True  # a degenerate (zero-area) top box still owns itself
        cluster, order = order[overlap], order[~overlap]
        w = scores[cluster] / scores[cluster].sum()
        out.append((w @ boxes[cluster], float(scores[cluster[0]]), np.tensordot(w, kps[cluster], axes=1)))
    return out


def decode(outputs: Mapping[str, np.ndarray] | Sequence[np.ndarray], transform: Letterbox,
           score_threshold: float = SCORE_THRESHOLD, iou_threshold: float = MIN_SUPPRESSION_THRESHOLD,
           input_size: int = 128) -> list[Detection]:
    """Raw BlazeFace outputs (either convention) -> faces in image pixels, best score first."""
    regressors, logits = _split_outputs(outputs)
    boxes, kps, scores = decode_raw(regressors, logits, ssd_anchors(input_size), input_size)
    keep = scores >= score_threshold
    dets = []
    for box, score, kp in weighted_nms(boxes[keep], kps[keep], scores[keep], iou_threshold):
        dets.append(Detection(box=transform.to_image(box.reshape(2, 2)).ravel(), score=score,
                              keypoints=transform.to_image(kp)))
    return dets
