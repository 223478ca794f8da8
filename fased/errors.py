"""Errors that reach the user as one clear line, each with a stable exit code.

Exit codes (documented in `man fased`):
  0 ok, 1 error, 2 usage, 3 conflict, 4 state (log or home unusable), 5 every model failed.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CONFLICT = 3
EXIT_STATE = 4
EXIT_MODELS_FAILED = 5


class FasedError(Exception):
    """A failure the user can act on: one message line, an optional hint, an exit code."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(FasedError):
    """Bad input from the user: a malformed value, an unknown name."""

    exit_code = EXIT_USAGE


class NotFoundError(FasedError):
    """The thing named does not exist (or is deleted)."""

    exit_code = EXIT_ERROR


class ConflictError(FasedError):
    """The command lost a race or contradicts current state (already exists, stale version)."""

    exit_code = EXIT_CONFLICT


class StateError(FasedError):
    """The state directory or log cannot be used as it is (corrupt, newer format, unreadable)."""

    exit_code = EXIT_STATE


class CorruptLogError(StateError):
    """A record before the tail fails its checksum; names the file and byte offset."""

    def __init__(self, path: str, offset: int, reason: str):
        super().__init__(
            f"corrupt record in {path} at byte {offset}: {reason}",
            hint="run `fased doctor` to see every finding; events before this point are intact",
        )
        self.path = path
        self.offset = offset


class LogGapError(StateError):
    """Seqs are missing from the log: a segment deleted or renamed, lines cut out."""

    def __init__(self, message: str, *, first: int, last: int):
        super().__init__(
            message,
            hint="nothing was changed; restore the missing segment file(s) from a backup "
            "(`fased doctor` says what is missing)",
        )
        self.first = first
        self.last = last


class StateAheadError(StateError):
    """state.db has applied events that the log no longer holds: they were committed, so the
    log lost them (a cut or emptied tail, a removed last segment)."""

    def __init__(self, head: int, checkpoint: int, torn=None):
        where = ""
        if torn is not None:
            where = (f"; {torn.size - torn.offset} damaged bytes at byte {torn.offset} of "
                     f"{torn.path} are kept where they are")
        super().__init__(
            f"state.db has applied events up to seq {checkpoint}, but the log ends at seq "
            f"{head}: seqs {head + 1}..{checkpoint} are missing from the log{where}",
            hint="nothing was changed; restore the log from a backup, or accept the loss with "
            "`fased doctor --repair --accept-loss` (it is recorded)",
        )
        self.head = head
        self.checkpoint = checkpoint
        self.torn = torn


class ModelsFailedError(FasedError):
    """Every model the turn could use failed."""

    exit_code = EXIT_MODELS_FAILED
