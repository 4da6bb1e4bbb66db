"""Runners: layout handling, fixed-batch padding, and the proof that the requested backend is really the one running.

A benchmark that silently measured the CPU while reporting "CUDA" or "Edge TPU" would be worse than no benchmark,
so the mismatch paths are tested with fakes at the runtime's module boundary (the only way to get a runtime to lie
on a machine without the hardware).
"""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from harness import specs
from harness.errors import BackendMismatchError, UnavailableError
from harness.runners import backend_availability, make_runner
from harness.runners import litert_runner, onnxruntime_runner
from harness.runners.litert_runner import LiteRTRunner
from harness.runners.onnxruntime_runner import OnnxRuntimeRunner
from harness.targets import target_status

CPU = specs.Backend(runtime="onnxruntime", variants=(), provider="CPUExecutionProvider")


def times_two_model(path: Path, shape: list, *, channel_scale: bool = True) -> Path:
    """y = x * 2 (+ per-channel offset on the channel axis, so a wrong transpose gives wrong numbers)."""
    nodes = [helper.make_node("Mul", ["x", "two"], ["y0"]), helper.make_node("Add", ["y0", "offset"], ["y"])]
    channels_first = shape[1] == 3
    off_shape = [1, 3, 1, 1] if channels_first else [1, 1, 1, 3]
    graph = helper.make_graph(
        nodes, "times_two",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        initializer=[helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
                     helper.make_tensor("offset", TensorProto.FLOAT, off_shape, [0.0, 10.0, 20.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def nhwc_batch(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 4, 5, 3)).astype(np.float32)


def expected_nhwc(x: np.ndarray) -> np.ndarray:
    return x * 2 + np.array([0.0, 10.0, 20.0], np.float32)


# --- onnxruntime on tiny real models ----------------------------------------------------------------------------


def test_nchw_layout_guessed_and_transposed(tmp_path):
    runner = make_runner(CPU, times_two_model(tmp_path / "nchw.onnx", ["N", 3, 4, 5]))
    assert runner.io.layout == "NCHW"
    assert runner.io.input_shape == (-1, 3, 4, 5) and runner.io.fixed_batch == 0
    x = nhwc_batch(3)
    prepared, n = runner.prepare(x)
    assert prepared.shape == (3, 3, 4, 5) and n == 3
    (y,) = runner.run(x)
    np.testing.assert_allclose(y.transpose(0, 2, 3, 1), expected_nhwc(x), rtol=1e-6)


def test_nhwc_layout_guessed_and_fed_as_is(tmp_path):
    runner = make_runner(CPU, times_two_model(tmp_path / "nhwc.onnx", ["N", 4, 5, 3]))
    assert runner.io.layout == "NHWC"
    x = nhwc_batch(2)
    (y,) = runner.run(x)
    np.testing.assert_allclose(y, expected_nhwc(x), rtol=1e-6)


def test_fixed_batch_two_pads_a_single_input_and_trims_the_output(tmp_path):
    runner = make_runner(CPU, times_two_model(tmp_path / "b2.onnx", [2, 4, 5, 3]))
    assert runner.io.fixed_batch == 2 and runner.max_batch(32) == 2
    x = nhwc_batch(1, seed=3)
    prepared, n = runner.prepare(x)
    assert prepared.shape == (2, 4, 5, 3) and n == 1
    np.testing.assert_array_equal(prepared[0], prepared[1])  # padded by repeating the real row
    (y,) = runner.run(x)
    assert y.shape == (1, 4, 5, 3)
    np.testing.assert_allclose(y, expected_nhwc(x), rtol=1e-6)
    with pytest.raises(ValueError, match="fixed batch 2"):
        runner.prepare(nhwc_batch(3))


def test_active_provider_is_recorded(tmp_path):
    runner = make_runner(CPU, times_two_model(tmp_path / "m.onnx", ["N", 3, 4, 5]))
    assert runner.backend.active[0] == "CPUExecutionProvider" and runner.backend.ok
    assert runner.backend.requested == "CPUExecutionProvider"


# --- the silent GPU fallback, with a fake onnxruntime ----------------------------------------------------------


def fake_onnxruntime(session_providers: list[str]) -> types.ModuleType:
    """onnxruntime-gpu without a usable GPU: CUDA is *available*, but the session quietly runs on CPU."""
    mod = types.ModuleType("onnxruntime")
    mod.__version__ = "1.99.0-fake"
    mod.get_available_providers = lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]

    class SessionOptions:
        intra_op_num_threads = 0
        log_severity_level = 2

    class InferenceSession:
        def __init__(self, path, sess_options=None, providers=None):
            self.requested = providers

        def get_providers(self):
            return list(session_providers)

        def get_inputs(self):
            return [types.SimpleNamespace(name="x", shape=["N", 3, 4, 5], type="tensor(float)")]

        def get_outputs(self):
            return [types.SimpleNamespace(name="y")]

    mod.SessionOptions, mod.InferenceSession = SessionOptions, InferenceSession
    return mod


def test_silent_cpu_fallback_is_a_backend_mismatch(tmp_path, monkeypatch):
    monkeypatch.setattr(onnxruntime_runner, "import_onnxruntime", lambda: fake_onnxruntime(["CPUExecutionProvider"]))
    with pytest.raises(BackendMismatchError) as exc:
        OnnxRuntimeRunner(tmp_path / "any.onnx", provider="CUDAExecutionProvider")
    msg = str(exc.value)
    assert "CUDAExecutionProvider" in msg and "CPUExecutionProvider" in msg and "not active" in msg
    assert exc.value.requested == "CUDAExecutionProvider" and exc.value.active == ["CPUExecutionProvider"]
    assert isinstance(exc.value, UnavailableError)  # exit code 3, like any unavailable backend


def test_fake_session_that_really_got_cuda_is_accepted(tmp_path, monkeypatch):
    # Control for the test above: the same fake, when the session reports CUDA first, passes the check.
    monkeypatch.setattr(onnxruntime_runner, "import_onnxruntime",
                        lambda: fake_onnxruntime(["CUDAExecutionProvider", "CPUExecutionProvider"]))
    runner = OnnxRuntimeRunner(tmp_path / "any.onnx", provider="CUDAExecutionProvider")
    assert runner.backend.ok and runner.backend.active[0] == "CUDAExecutionProvider"
    assert runner.io.layout == "NCHW"


def test_provider_not_in_this_build_is_unavailable(tmp_path):
    with pytest.raises(UnavailableError) as exc:
        OnnxRuntimeRunner(times_two_model(tmp_path / "m.onnx", ["N", 3, 4, 5]), provider="CUDAExecutionProvider")
    assert not isinstance(exc.value, BackendMismatchError)
    assert "CUDAExecutionProvider" in str(exc.value) and "CPUExecutionProvider" in str(exc.value)


# --- LiteRT on a real built model ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gender_tflite(built_packs) -> Path:
    from harness.models.pack import variant_path

    path = variant_path(built_packs, "gender-dlib", "tflite-fp32")
    if not path.exists():
        pytest.skip(f"{path} not built")
    return path


def test_litert_proves_xnnpack_and_matches_onnx(gender_tflite):
    runner = LiteRTRunner(gender_tflite, delegate="xnnpack")
    assert runner.backend.ok
    assert runner.backend.active[0].startswith("xnnpack:")
    assert int(runner.backend.active[0].split(":")[1].split()[0]) > 0  # DELEGATE nodes in the execution plan
    assert "DELEGATE" in litert_runner._execution_ops(runner.interp)
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (1, 32, 32, 3)).astype(np.float32)
    (y,) = runner.run(x)
    assert y.shape == (1, 2) and np.isfinite(y).all()
    onnx_path = gender_tflite.with_name("onnx-fp32.onnx")
    (ref,) = make_runner(CPU, onnx_path).run(x)
    np.testing.assert_allclose(y, ref, atol=1e-4)  # the converted graph computes what its ONNX parent does


def test_litert_without_delegate_reports_builtin_kernels(gender_tflite):
    runner = LiteRTRunner(gender_tflite, delegate="none")
    assert runner.backend.active == ["builtin CPU kernels"]
    assert "DELEGATE" not in litert_runner._execution_ops(runner.interp)


def test_missing_delegate_library_is_unavailable(gender_tflite):
    with pytest.raises(UnavailableError) as exc:
        LiteRTRunner(gender_tflite, delegate="gpu", delegate_library="libbench_no_such_delegate.so.1")
    assert "not found" in str(exc.value) and "libbench_no_such_delegate.so.1" in str(exc.value)


def test_uncompiled_model_on_edgetpu_is_refused(gender_tflite, monkeypatch):
    """libedgetpu "loads" (faked), but the model has no edgetpu-custom-op: it would run on the CPU unnoticed."""
    from ai_edge_litert import interpreter as real

    loaded = []

    def interpreter(**kwargs):
        delegates = kwargs.pop("experimental_delegates", [])
        assert delegates == ["fake-edgetpu-delegate"]  # the runner handed the loaded delegate to the interpreter
        return real.Interpreter(**kwargs)

    fake = types.SimpleNamespace(Interpreter=interpreter, OpResolverType=real.OpResolverType,
                                 load_delegate=lambda lib: loaded.append(lib) or "fake-edgetpu-delegate")
    monkeypatch.setattr(litert_runner, "import_litert", lambda: (fake, "ai-edge-litert", "fake"))
    monkeypatch.setattr(litert_runner, "find_delegate_library", lambda name: "/usr/lib/libedgetpu.so.1")
    with pytest.raises(BackendMismatchError) as exc:
        LiteRTRunner(gender_tflite, delegate="edgetpu", delegate_library="libedgetpu.so.1")
    assert loaded == ["libedgetpu.so.1"]
    assert "edgetpu" in str(exc.value) and "not compiled by edgetpu_compiler" in str(exc.value)


def test_the_interpreters_node_list_shows_delegated_and_custom_nodes(gender_tflite, tmp_path):
    """What the delegate proof reads, from the interpreter alone (tflite-runtime has no flatbuffer reader): the nodes
    XNNPACK replaced stay listed beside its DELEGATE node, and a custom node is named by its custom code, so a
    compiled Edge TPU model shows edgetpu-custom-op (here one operator of the real model turned into it)."""
    from ai_edge_litert import interpreter as real
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils

    runner = LiteRTRunner(gender_tflite, delegate="xnnpack")
    ops = litert_runner._execution_ops(runner.interp)
    assert "DELEGATE" in ops and "CONV_2D" in ops

    model = flatbuffer_utils.read_model(str(gender_tflite))
    code = fb.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = fb.BuiltinOperator.CUSTOM
    code.customCode, code.version = "edgetpu-custom-op", 1
    model.operatorCodes.append(code)
    first = model.subgraphs[0].operators[0]
    first.opcodeIndex, first.builtinOptionsType, first.builtinOptions = len(model.operatorCodes) - 1, 0, None
    compiled = tmp_path / "tflite-int8_edgetpu.tflite"
    flatbuffer_utils.write_model(model, str(compiled))
    assert litert_runner._execution_ops(real.Interpreter(model_path=str(compiled)))[0] == "edgetpu-custom-op"


@pytest.mark.parametrize("variant, package, hint", [("tflite-int8", "tflite-runtime", True),
                                                    ("tflite-int8", "ai-edge-litert", False),
                                                    ("tflite-fp32", "tflite-runtime", False)])
def test_xnnpack_that_delegates_nothing_is_refused_saying_why(built_packs, monkeypatch, variant, package, hint):
    """tflite-runtime 2.13 (the Python 3.8/3.9 boards' LiteRT) delegates no node of an all-int8 model to XNNPACK. The
    interpreter is made to behave so (no default delegates) at the module boundary; the refusal (exit 3) says why
    for a quantized model on tflite-runtime, and only there."""
    from ai_edge_litert import interpreter as real
    from harness.errors import EXIT_UNAVAILABLE
    from harness.models.pack import variant_path

    path = variant_path(built_packs, "gender-dlib", variant)
    if not path.exists():
        pytest.skip(f"{path} not built")

    def interpreter(**kwargs):
        assert "experimental_op_resolver_type" not in kwargs  # xnnpack: the runtime's default resolver
        none = real.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        return real.Interpreter(**kwargs, experimental_op_resolver_type=none)

    fake = types.SimpleNamespace(Interpreter=interpreter, OpResolverType=real.OpResolverType, load_delegate=None)
    monkeypatch.setattr(litert_runner, "import_litert", lambda: (fake, package, "2.13.0"))
    with pytest.raises(BackendMismatchError) as exc:
        LiteRTRunner(path, delegate="xnnpack")
    assert exc.value.exit_code == EXIT_UNAVAILABLE and "\n" not in exc.value.message
    assert exc.value.message.startswith("requested delegate 'xnnpack' is not active; active: builtin CPU kernels")
    said = "tflite-runtime 2.13.0's XNNPACK delegates float operators only" in exc.value.message
    assert said is hint, exc.value.message


# --- availability without loading a model ----------------------------------------------------------------------


def test_cuda_backend_unavailable_names_onnxruntime_gpu():
    ok, reason = backend_availability(specs.get_target("cuda").backends[0])
    assert ok is False
    assert "onnxruntime-gpu" in reason and "CUDAExecutionProvider" in reason


def test_cpu_backends_available():
    for b in specs.get_target("cpu").backends:
        assert backend_availability(b) == (True, None)


def test_target_status_on_this_machine():
    rows = {r["target"]: r for r in target_status()}
    assert rows["cpu"]["available"] is True and rows["cpu"]["reason"] is None
    assert rows["rpi"]["available"] is False and "not a Raspberry Pi" in rows["rpi"]["reason"]
    assert rows["jetson"]["available"] is False and "not a NVIDIA Jetson" in rows["jetson"]["reason"]
    assert rows["coral"]["available"] is False and "libedgetpu" in rows["coral"]["reason"]
    assert rows["cuda"]["available"] is False
