"""Where a run's figures come from, as every reader names it (the buyer's page, `bench export`'s runs table):
"real" (measured by `bench run`), "emulated" (timings are an emulator's) or "imported" (no launcher recorded).

Everything a board sends back is data: only the presence of the blocks below is read, never a board's own claim
to be real; strings are returned as data, for the caller to escape where it prints them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def provenance(doc: Mapping[str, Any]) -> tuple[str, str]:
    """(kind, why) of a run.json document: "emulated" when its launcher or fingerprint carries an emulation block
    (qemu-user; its timings are the emulator's), "imported" when no `bench run` launcher is recorded (a run pushed
    into the store from elsewhere or written by a tool: nothing says it was measured here), else "real"."""
    emu = next((b for b in ((doc.get("launcher") or {}).get("emulation"),
                            (doc.get("environment") or {}).get("emulation"),
                            (doc.get("device_environment") or {}).get("emulation")) if b), None)
    if emu:
        by = emu.get("by", "an emulator") if isinstance(emu, dict) else "an emulator"
        cpu = emu.get("cpu", "?") if isinstance(emu, dict) else "?"
        return "emulated", f"emulated by {by} (-cpu {cpu}): timings are the emulator's, not a board's"
    if not isinstance(doc.get("launcher"), dict):
        return "imported", "no launcher recorded: not measured by bench run (pushed or written by a tool)"
    return "real", f"measured by bench run ({doc['launcher'].get('kind', 'local')} launcher)"


def target(doc: Mapping[str, Any]) -> str:
    """The run's target id (run.json `target.id`)."""
    t = doc.get("target")
    return str(t.get("id")) if isinstance(t, dict) else str(t)


def board(doc: Mapping[str, Any]) -> str:
    """The board as every report names it: its target, marked when the run is emulated or imported."""
    kind, _ = provenance(doc)
    return target(doc) if kind == "real" else f"{target(doc)} ({kind})"


def fingerprint(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The fingerprint of the machine that ran the models: the board's own (device_environment) where the jobs ran
    on a board, else the host's (environment)."""
    env = doc.get("device_environment") or doc.get("environment") or {}
    return env if isinstance(env, dict) else {}


def fingerprint_sha256(doc: Mapping[str, Any]) -> str:
    """sha256 of the fingerprint as canonical JSON (sorted keys, no spaces): two runs on the same machine, runtime
    versions and settings share it, so a table can group runs by it."""
    text = json.dumps(fingerprint(doc), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
