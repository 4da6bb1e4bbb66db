"""The model pack manifest (<cache>/packs/<model>/pack.json) and the model x variant status matrix."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from harness.errors import IntegrityError
from harness.files import atomic_write_text
from harness.models.fetch import sha256_file
from harness.paths import packs_dir
from harness.specs import ModelSpec, split_variant

PACK_VERSION = 1


def variant_path(cache: Path, model_id: str, variant: str) -> Path:
    fmt, _ = split_variant(variant)
    return packs_dir(cache, model_id) / f"{variant}.{fmt}"


def pack_file(cache: Path, model_id: str) -> Path:
    return packs_dir(cache, model_id) / "pack.json"


def read_pack(cache: Path, model_id: str) -> dict:
    path = pack_file(cache, model_id)
    if not path.exists():
        return {"pack_version": PACK_VERSION, "model": model_id, "variants": {}}
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, OSError) as exc:
        raise IntegrityError(f"{path}: unreadable pack manifest ({exc}); rebuild with bench models build "
                             f"--model {model_id} --force") from None
    doc.setdefault("variants", {})
    return doc


def write_pack(cache: Path, model_id: str, doc: dict) -> None:
    path = pack_file(cache, model_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(doc, indent=2, sort_keys=True, default=str))


@dataclass(frozen=True)
class VariantStatus:
    model: str
    task: str
    variant: str
    status: str          # built | missing | failed
    reason: str | None
    path: str | None
    sha256: str | None
    fidelity: dict | None
    info: dict

    @property
    def format(self) -> str:
        return split_variant(self.variant)[0]

    @property
    def precision(self) -> str:
        return split_variant(self.variant)[1]

    def to_dict(self) -> dict:
        return {"model": self.model, "task": self.task, "variant": self.variant, "format": self.format,
                "precision": self.precision, "status": self.status, "reason": self.reason, "path": self.path,
                "sha256": self.sha256, "fidelity": self.fidelity,
                "input": self.info.get("input"), "recipe": self.info.get("recipe")}


def variant_status(cache: Path, model: ModelSpec, variant: str, *, verify: bool = True) -> VariantStatus:
    """Status of one variant as recorded in the pack, cross-checked against the file on disk.

    A file whose sha256 no longer matches the pack (truncated copy, disk error, hand edit) is reported as failed,
    so nothing downstream ever hands a corrupt file to a runtime.
    """
    pack = read_pack(cache, model.id)
    rec = pack["variants"].get(variant)
    path = variant_path(cache, model.id, variant)
    if rec is None:
        return VariantStatus(model.id, model.task, variant, "missing", "not built yet (bench models build)",
                             None, None, None, {})
    status, reason = rec.get("status", "missing"), rec.get("reason")
    if status == "built":
        if not path.exists():
            status, reason = "missing", f"{path} was deleted from the cache; rebuild with bench models build"
        elif verify and sha256_file(path) != rec.get("sha256"):
            status, reason = "failed", f"{path}: file is corrupt (sha256 differs from the pack); rebuild with " \
                                       f"bench models build --model {model.id}"
    return VariantStatus(model.id, model.task, variant, status, reason, str(path) if status == "built" else None,
                         rec.get("sha256") if status == "built" else None, rec.get("fidelity"), rec)


def pack_matrix(cache: Path, models: list[ModelSpec]) -> list[VariantStatus]:
    return [variant_status(cache, m, v) for m in models for v in m.build_order()]
