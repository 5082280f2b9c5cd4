"""What happened to one input of a run: the one record that the local loop, the Ray engine, the file
encoder and the run's report share, and the rule for which errors fail one input and which stop a run.

An input fails alone for the errors a bad input causes: :class:`~dacli.errors.DacliError` (what dacli
and its audio readers say of a file: libsndfile's and FFmpeg's errors reach here as one) and
``OSError`` (missing, unreadable, a full disk). Anything else is a bug in dacli: it stops the run with
its traceback and is never reported as a bad input.
"""

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Union

from .container import Header
from .errors import DacliError
from .fileio import os_reason

OK, SKIPPED, FAILED = "ok", "skipped", "failed"
INPUT_ERRORS = (DacliError, OSError)
WORKER = f"{socket.gethostname()}:{os.getpid()}"  # this process, as a report names it
ROW = ("src", "dst", "status", "reason", "seconds", "worker")  # the fields a report (and a Ray row) carries


def reason(src: Union[str, Path], e: BaseException) -> str:
    """The one-line reason an input failed with ``e`` (one of :data:`INPUT_ERRORS`): dacli's message as
    it is, an environment error with the file it concerns."""
    if isinstance(e, OSError):
        return f"{e.filename or src}: {os_reason(e)}"
    return str(e)


@dataclass
class Outcome:
    """One input of a run: where it went, whether it was encoded, skipped or failed (and why), its
    seconds of audio and the worker that did it. ``header`` (what was written) and ``error`` (what
    failed it) stay in the process that made the outcome; :meth:`row` is what travels and is reported."""
    src: str
    dst: str
    status: str
    reason: str = ""
    seconds: float = 0.0
    worker: str = WORKER
    header: Optional[Header] = field(default=None, repr=False, compare=False)
    error: Optional[BaseException] = field(default=None, repr=False, compare=False)

    @classmethod
    def done(cls, src: Any, dst: Any, header: Optional[Header] = None) -> "Outcome":
        return cls(str(src), str(dst), OK, seconds=header.duration if header else 0.0, header=header)

    @classmethod
    def failed(cls, src: Any, dst: Any, e: BaseException) -> "Outcome":
        return cls(str(src), str(dst), FAILED, reason(src, e), error=e)

    @classmethod
    def skipped(cls, src: Any, dst: Any, why: str) -> "Outcome":
        return cls(str(src), str(dst), SKIPPED, why)

    def row(self) -> Dict[str, Any]:
        return {k: getattr(self, k) for k in ROW}

    @classmethod
    def from_row(cls, row: Dict[str, Any]) -> "Outcome":
        return cls(str(row["src"]), str(row["dst"]), str(row["status"]), str(row["reason"]), float(row["seconds"]),
                   str(row["worker"]))
