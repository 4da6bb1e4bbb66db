"""One exception tree for the whole harness.

Every error the user can cause or meet maps to a named exit code and a one-line message;
cli.py is the only place that turns them into exit codes. Messages name the file/id and the problem.
"""

from __future__ import annotations

# Named exit codes (documented in README "Exit codes").
EXIT_OK = 0
EXIT_FAILURE = 1          # the run finished but some entries failed, or an unexpected internal error
EXIT_USAGE = 2            # bad flag, unknown id, bad input file, bad policy
EXIT_UNAVAILABLE = 3      # a requested target/provider/delegate/tool is not available on this machine
EXIT_INTEGRITY = 4        # checksum mismatch, corrupt model or result file
EXIT_OFFLINE = 5          # a download was needed and the network is unreachable
EXIT_GATE_PERF = 10       # gate: performance regression
EXIT_GATE_FAIRNESS = 11   # gate: fairness/accuracy regression
EXIT_GATE_BOTH = 12       # gate: both
EXIT_INTERRUPTED = 130


class BenchError(Exception):
    """Base class: carries an exit code and a one-line message."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(BenchError):
    exit_code = EXIT_USAGE


class InputError(BenchError):
    """A user-supplied file (manifest, image list, policy, config) is malformed."""

    exit_code = EXIT_USAGE


class GalleryTooLarge(InputError):
    """A search job's gallery size would not fit in the memory the board has available (harness/device/search.py):
    the run setting --search-sizes asks for too much of this board (exit 2)."""


class UnknownIdError(UsageError):
    def __init__(self, kind: str, given: str, valid: list[str] | tuple[str, ...]):
        super().__init__(f"unknown {kind} '{given}'; valid: {', '.join(sorted(valid)) or '(none)'}")
        self.kind, self.given, self.valid = kind, given, list(valid)


class UnavailableError(BenchError):
    """A runtime, provider, delegate, tool or device asked for is not available here."""

    exit_code = EXIT_UNAVAILABLE


class BackendMismatchError(UnavailableError):
    """The runtime silently gave us something other than what was asked (e.g. CPU instead of CUDA)."""

    def __init__(self, requested: str, active: list[str] | str, what: str = "execution provider"):
        active_s = ", ".join(active) if isinstance(active, (list, tuple)) else str(active)
        super().__init__(f"requested {what} '{requested}' is not active; active: {active_s or '(none)'}")
        self.requested, self.active = requested, active


class IntegrityError(BenchError):
    exit_code = EXIT_INTEGRITY


class ChecksumError(IntegrityError):
    def __init__(self, path: str, expected: str, actual: str):
        super().__init__(f"{path}: sha256 mismatch: expected {expected}, actual {actual}")
        self.path, self.expected, self.actual = path, expected, actual


class OfflineError(BenchError):
    exit_code = EXIT_OFFLINE


class BuildError(BenchError):
    """A model variant could not be built or failed its fidelity check."""

    exit_code = EXIT_FAILURE


class InfrastructureError(UnavailableError):
    """What a board (or a local worker) sent back is not what the job asked for: a missing, extra, oversized or
    malformed file, or a claim that contradicts the host's own health check (harness/launchers/trust.py). Says
    nothing about the model; the entry is failed as `infrastructure` and retried on --resume (exit 3)."""
