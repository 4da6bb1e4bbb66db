"""TFLite -> ONNX with tflite2onnx 0.4.1 (pure Python, no tensorflow).

tflite2onnx turns the NHWC image input into NCHW; the returned facts say so, with the permutation runners apply to
an NHWC batch. The converted model is checked against the LiteRT original on one seeded input: outputs must agree
within MAX_REL_DIFF of the output scale, or the conversion is a BuildError.

Reproducible output: tflite2onnx emits the graph's initializers (and value_info) in an order that follows Python's
per-process string hashing, so the same .tflite gave a different .onnx file in every process (same graph, other
bytes). They are put in name order before the file is written; the node order (the graph's topological order)
is already stable.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import numpy as np
import onnx
import tflite2onnx
from ai_edge_litert.interpreter import Interpreter

from harness.convert.onnx_variants import describe_input, validate_onnx
from harness.convert.tflite_variants import run_tflite
from harness.errors import BuildError

# float32 reassociation differences between two runtimes stay around 1e-5 of the output scale (MobileFaceNet 2.6e-5
# absolute on embeddings of magnitude ~10, BlazeFace 5e-5 on logits of ~100); a layout or weight mistake is O(1).
MAX_REL_DIFF = 1e-4


def _sort_unordered_tables(path: Path) -> None:
    """Rewrite `path` with its initializers and value_info in name order (ONNX gives their order no meaning)."""
    model = onnx.load(str(path))
    graph = model.graph
    for table in (graph.initializer, graph.value_info):
        ordered = sorted(table, key=lambda item: item.name)
        copies = [type(item)() for item in ordered]
        for copy, item in zip(copies, ordered):
            copy.CopyFrom(item)
        del table[:]
        table.extend(copies)
    onnx.save(model, str(path))


def convert(src: str | Path, dst: str | Path) -> dict:
    """Convert `src` (.tflite) to `dst` (.onnx), verify against LiteRT, return the facts for the model pack."""
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    try:
        interpreter = Interpreter(model_path=str(src))
        interpreter.allocate_tensors()
    except Exception as exc:  # LiteRT raises ValueError/RuntimeError on unreadable files
        raise BuildError(f"{src}: does not load in LiteRT: {exc}") from exc
    try:
        # tflite2onnx logs a warning per fp16 tensor ("not supported/tested yet"); MediaPipe files have dozens.
        with contextlib.redirect_stdout(io.StringIO()):
            logging.getLogger("tflite2onnx").setLevel(logging.ERROR)
            tflite2onnx.convert(str(src), str(dst))
    except Exception as exc:  # tflite2onnx raises NotImplementedError/ValueError/AssertionError per unsupported op
        raise BuildError(f"{dst}: tflite2onnx conversion of {src} failed: {exc}") from exc

    _sort_unordered_tables(Path(dst))

    src_shape = [int(d) for d in interpreter.get_input_details()[0]["shape"]]
    sample = np.random.default_rng(0).uniform(-1.0, 1.0, src_shape).astype(np.float32)
    reference = run_tflite(interpreter, sample)
    model = onnx.load(str(dst))
    inp = describe_input(model)
    transpose = [0, 3, 1, 2] if inp["layout"] == "NCHW" and len(src_shape) == 4 else None
    feed = sample.transpose(transpose) if transpose else sample
    outputs = validate_onnx(dst, feed)
    names = [o.name for o in model.graph.output]
    diffs = {}
    for name, y in zip(names, outputs):
        if name not in reference or reference[name].shape != y.shape:
            raise BuildError(f"{dst}: output '{name}' {list(y.shape)} has no LiteRT counterpart of that shape")
        diffs[name] = float(np.max(np.abs(reference[name] - y)))
        scale = max(1.0, float(np.max(np.abs(reference[name]))))
        if diffs[name] > MAX_REL_DIFF * scale:
            raise BuildError(f"{dst}: output '{name}' differs from LiteRT by {diffs[name]:.3g} "
                             f"(limit {MAX_REL_DIFF * scale:.3g})")
    return {
        "recipe": f"tflite2onnx {getattr(tflite2onnx, '__version__', '0.4.1')} from {Path(src).name}",
        "input": inp,
        "source_input": {"shape": src_shape, "layout": "NHWC"},
        "transpose_from_source": transpose,
        "io_dtype": "float32",
        "max_abs_diff_vs_tflite": diffs,
        "notes": ["input is NCHW: transpose an NHWC batch with transpose_from_source"] if transpose else [],
    }
