"""The model pack manifest (<cache>/packs/<model>/pack.json) and the model x variant status matrix.

Each variant's record says what it was built from (`built_from`): the pinned source file (package and sha256)
and the sha256 of its recipe in the model manifest. A variant whose pin or recipe has changed since is "stale":
listed as such, never run, and rebuilt by the next `bench models build` (or `bench run`'s lazy build).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from harness.errors import IntegrityError
from harness.models import fidelity
from harness.files import atomic_write_text
from harness.models.fetch import sha256_file
from harness.paths import packs_dir
from harness.specs import COMPILED_VARIANTS, ModelSpec, parse_variant, split_variant

PACK_VERSION = 2  # 2: variants record built_from (source pin + recipe sha256)

# ModelSpec fields that do not change what a build makes (identity and wording); every other field -- sources,
# input, output, reference variant and any table added later -- is part of each variant's recipe hash.
_NOT_RECIPE = ("id", "name", "licence", "path", "variants")


def variant_path(cache: Path, model_id: str, variant: str) -> Path:
    """<pack>/<variant>.<format>; a compiled variant's file is named as its compiler names it: tflite-int8@edgetpu ->
    tflite-int8_edgetpu.tflite (harness/models/compile.py)."""
    v = parse_variant(variant)
    return packs_dir(cache, model_id) / f"{v.slug}.{v.format}"


def pack_file(cache: Path, model_id: str) -> Path:
    return packs_dir(cache, model_id) / "pack.json"


def empty_pack(model_id: str) -> dict:
    return {"pack_version": PACK_VERSION, "model": model_id, "variants": {}}


def read_pack(cache: Path, model_id: str) -> dict:
    path = pack_file(cache, model_id)
    if not path.exists():
        return empty_pack(model_id)
    try:
        doc = json.loads(path.read_text())
        if not isinstance(doc, dict) or not isinstance(doc.setdefault("variants", {}), dict) \
                or not all(isinstance(r, dict) for r in doc["variants"].values()):
            raise ValueError("not a pack manifest (an object with a 'variants' object of variant records)")
    except (ValueError, OSError) as exc:  # json.JSONDecodeError is a ValueError
        raise IntegrityError(f"{path}: unreadable pack manifest ({exc}); rebuild with bench models build "
                             f"--model {model_id} --force") from None
    return doc


def set_aside(cache: Path, model_id: str) -> Path:
    """Move an unreadable pack.json out of the way (kept for inspection); returns where it went."""
    path = pack_file(cache, model_id)
    aside = path.with_name(f"pack.json.corrupt-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S.%fZ')}")
    path.replace(aside)
    return aside


def write_pack(cache: Path, model_id: str, doc: dict) -> None:
    path = pack_file(cache, model_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(doc, indent=2, sort_keys=True, default=str))


def _plain(obj):
    """A spec object as plain JSON-able data (dataclasses, read-only mappings and tuples unwrapped)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def root_source(model: ModelSpec, variant: str):
    """The pinned source file a variant is ultimately made from (following its parents)."""
    recipe = model.variants[variant]
    while recipe.source is None:
        recipe = model.variants[recipe.parent]
    return model.source(recipe.source)


def recipe_sha256(model: ModelSpec, variant: str) -> str:
    """sha256 of everything in the manifest that shapes `variant`: the model's tables (sources, input, output,
    reference variant, and whatever tables are added later) and the recipes of the variant and its ancestors."""
    chain, v = [], variant
    while v is not None:
        chain.append(_plain(model.variants[v]))
        v = model.variants[v].parent
    doc = {"model": {f.name: _plain(getattr(model, f.name)) for f in dataclasses.fields(model)
                     if f.name not in _NOT_RECIPE},
           "variant": chain}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def built_from(model: ModelSpec, variant: str) -> dict:
    """What a variant is built from now, as recorded in its pack entry (a compiled variant: its base's)."""
    variant = parse_variant(variant).base
    src = root_source(model, variant)
    return {"source": {"id": src.id, "package": src.package, "sha256": src.sha256},
            "recipe_sha256": recipe_sha256(model, variant)}


def staleness(model: ModelSpec, variant: str, rec: dict) -> str | None:
    """Why a variant's pack record no longer matches the manifest (None: it does)."""
    was = rec.get("built_from")
    if not isinstance(was, dict):
        return "built by an older harness that did not record the source pin and recipe"
    now = built_from(model, variant)
    old_src, new_src = was.get("source") or {}, now["source"]
    if (old_src.get("package"), old_src.get("sha256")) != (new_src["package"], new_src["sha256"]):
        return (f"source pin changed in {model.path.name}: built from {old_src.get('package')} "
                f"sha256 {str(old_src.get('sha256'))[:12]}..., now {new_src['package']} sha256 {new_src['sha256'][:12]}...")
    if was.get("recipe_sha256") != now["recipe_sha256"]:
        return f"recipe in {model.path.name} changed since it was built"
    return None


@dataclass(frozen=True)
class VariantStatus:
    model: str
    task: str
    variant: str
    status: str          # built | missing | failed | stale (a built variant outside tolerance is also `flagged`)
    reason: str | None
    path: str | None
    sha256: str | None
    fidelity: dict | None
    info: dict

    @property
    def flagged(self) -> bool:
        """Built and runnable, but its recorded fidelity is outside tolerance (harness.models.fidelity)."""
        return self.status == "built" and fidelity.flagged(self.fidelity)

    @property
    def format(self) -> str:
        return split_variant(self.variant)[0]

    @property
    def precision(self) -> str:
        return split_variant(self.variant)[1]

    def to_dict(self) -> dict:
        return {"model": self.model, "task": self.task, "variant": self.variant, "format": self.format,
                "precision": self.precision, "status": self.status, "flagged": self.flagged,
                "flag": fidelity.flag_text(self.fidelity) if self.flagged else None,
                "reason": self.reason, "path": self.path,
                "sha256": self.sha256, "fidelity": self.fidelity,
                "input": self.info.get("input"), "recipe": self.info.get("recipe"),
                "compiler": self.info.get("compiler"), "mapping": self.info.get("mapping")}


def variant_status(cache: Path, model: ModelSpec, variant: str, *, verify: bool = True) -> VariantStatus:
    """Status of one variant as recorded in the pack, cross-checked against the file on disk.

    A file whose sha256 no longer matches the pack (truncated copy, disk error, hand edit) is reported as failed,
    and a variant built from another source pin or recipe than the manifest's as stale, so nothing downstream ever
    hands a corrupt or outdated file to a runtime.
    """
    pack = read_pack(cache, model.id)
    rec = pack["variants"].get(variant)
    path = variant_path(cache, model.id, variant)
    if rec is None:
        compiler = parse_variant(variant).compiler
        how = f"bench models build --model {model.id} --compile {compiler}" if compiler else "bench models build"
        return VariantStatus(model.id, model.task, variant, "missing", f"not built yet ({how})",
                             None, None, None, {})
    status, reason = rec.get("status", "missing"), rec.get("reason")
    why = staleness(model, variant, rec)
    compiler = parse_variant(variant).compiler
    if compiler and not why and status == "built":
        source = pack["variants"].get(parse_variant(variant).base) or {}
        if source.get("sha256") != rec.get("source_sha256"):
            why = f"its source variant {parse_variant(variant).base} changed since it was compiled"
    if why:
        again = f" --compile {compiler}" if compiler else ""
        status, reason = "stale", f"{why}; rebuild with bench models build --model {model.id}{again}"
    elif status == "built":
        if not path.exists():
            status, reason = "missing", f"{path} was deleted from the cache; rebuild with bench models build"
        elif verify and sha256_file(path) != rec.get("sha256"):
            status, reason = "failed", f"{path}: file is corrupt (sha256 differs from the pack); rebuild with " \
                                       f"bench models build --model {model.id}"
    return VariantStatus(model.id, model.task, variant, status, reason, str(path) if status == "built" else None,
                         rec.get("sha256") if status == "built" else None, rec.get("fidelity"), rec)


def pack_matrix(cache: Path, models: list[ModelSpec]) -> list[VariantStatus]:
    """Every built variant of each model, then the compiled variants its pack records (bench models build --compile)."""
    rows = []
    for m in models:
        compiled = [v for v in COMPILED_VARIANTS if v in read_pack(cache, m.id)["variants"]]
        rows += [variant_status(cache, m, v) for v in (*m.build_order(), *compiled)]
    return rows
