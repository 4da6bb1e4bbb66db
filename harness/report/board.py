"""Which board a run measured on, read from its run.json, so a gate compares a run only with a baseline from the
same board (or the same board model) and never an emulated lane with a real one.

Where each fact comes from (the device's own fingerprint first: `device_environment`, written by the worker that
ran the jobs; a run without one falls back to `environment`, the host's, which is the device for local runs):
- target: the run's target id;
- emulated: `launcher.emulation` (--emulate, or the emulated board behind sshd) or an `emulation` block in a
  fingerprint; such a run never matches a real board's;
- board id: the hashed device-tree serial number (`serial_sha256`, Raspberry Pi and Jetson), else the hashed
  hostname (`hostname_sha256`; one machine per runner, as with the per-device nightly job). Two runs are compared
  by serial when both record one, else by hostname (a baseline from before serials were recorded still matches);
- model: the device-tree model (e.g. "Raspberry Pi 4 Model B Rev 1.4"), else the CPU model;
- name and tags: the inventory board or labgrid place the jobs ran on (`launcher.board`), tags including the
  place's labgrid tags, so a lab can keep one baseline per board model with a tag such as `model=pi5`.

Match rules (policy `[baseline] match`): "board" (default: the same physical board), "model" (any board of the same
model) or "tag:KEY" (any board whose tag KEY has the same value). Target and emulated-or-real always have to agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.environment import UNKNOWN
from harness.errors import UsageError
from harness.names import shown

MATCH_RULES = ("board", "model", "tag:KEY")


def check_match_rule(rule: str, where: str) -> str:
    if rule in ("board", "model") or (rule.startswith("tag:") and len(rule) > 4):
        return rule
    raise UsageError(f"{where}: unknown baseline match {rule!r}; valid: {', '.join(MATCH_RULES)}")


def _known(value: Any) -> str | None:
    return value if isinstance(value, str) and value and value != UNKNOWN else None


@dataclass(frozen=True)
class BoardIdentity:
    target: str
    emulated: str | None  # what emulates the board ("qemu-user -cpu cortex-a72"), None on real hardware
    serial: str | None    # sha256/16 of the device-tree serial number
    host: str | None      # sha256/16 of the hostname
    model: str | None
    name: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def board_id(self) -> str | None:
        """"serial:<sha256/16>", else "host:<sha256/16>"."""
        return f"serial:{self.serial}" if self.serial else f"host:{self.host}" if self.host else None

    def key(self, rule: str, other: BoardIdentity | None = None) -> str | None:
        """The value two runs must share under `rule` (None: this run does not record it). Under "board", the
        serial when both runs record one (`other`), else the hostname."""
        if rule == "board":
            if self.serial and (other is None or other.serial):
                return f"serial:{self.serial}"
            return f"host:{self.host}" if self.host else None
        if rule == "model":
            return self.model
        return self.tags.get(rule[4:])

    def describe(self, rule: str = "board") -> str:
        parts = [f"target {self.target}", f"emulated ({self.emulated})" if self.emulated else "real hardware"]
        parts.append(f"model {shown(self.model) if self.model else 'unknown'}")
        parts.append(f"board {self.board_id or 'unknown'}")
        if self.name:
            parts.append(f"place/board name {shown(self.name)}")
        if rule.startswith("tag:"):
            value = self.tags.get(rule[4:])
            parts.append(f"tag {shown(rule[4:])}={shown(value) if value is not None else '(none)'}")
        return ", ".join(parts)


def board_of(doc: dict[str, Any]) -> BoardIdentity:
    """The board a run.json document measured on."""
    launcher = doc.get("launcher") or {}
    env = doc.get("device_environment") or doc.get("environment") or {}
    emu = launcher.get("emulation") or env.get("emulation") or (doc.get("environment") or {}).get("emulation")
    emulated = None
    if emu:
        # the emulator without its version (an upgraded qemu still emulates the same board) and the emulated CPU
        emulated = f"{str(emu.get('by') or UNKNOWN).split()[0]} -cpu {emu.get('cpu', UNKNOWN)}"
    serial, host = _known(env.get("serial_sha256")), _known(env.get("hostname_sha256"))
    model = _known((env.get("device") or {}).get("model")) or _known((env.get("cpu") or {}).get("model"))
    board = launcher.get("board") if isinstance(launcher.get("board"), dict) else {}
    tags = {str(k): str(v) for k, v in (board.get("tags") or {}).items()}
    target = (doc.get("target") or {}).get("id", UNKNOWN)
    return BoardIdentity(target=target, emulated=emulated, serial=serial, host=host, model=model,
                         name=board.get("name"), tags=tags)


def mismatch(rule: str, run: BoardIdentity, baseline: BoardIdentity) -> str | None:
    """Why `baseline` may not judge `run` under `rule`, or None when it may."""
    if run.target != baseline.target:
        return "different targets"
    if bool(run.emulated) != bool(baseline.emulated):
        return "one is emulated, the other real hardware"
    if run.emulated != baseline.emulated:
        return "different emulations"
    what = {"board": "board (serial or host)", "model": "board model"}.get(rule, f"tag {rule[4:]!r}")
    mine, theirs = run.key(rule, baseline), baseline.key(rule, run)
    if mine is None or theirs is None:
        return f"the {what} is not recorded in " + ("both runs" if mine is None and theirs is None
                                                    else "the run" if mine is None else "the baseline")
    if mine != theirs:
        return f"different {what}"
    return None
