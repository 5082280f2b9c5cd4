"""The one exception type dacli raises for user-facing problems.

Anything raised as a :class:`DacliError` is a mistake in the input (a missing file, a corrupt
checkpoint, a truncated ``.dac``) rather than a bug: the command line prints its message on one
line and exits non-zero, without a traceback.
"""


class DacliError(Exception):
    """A problem with the user's input, reported as one clear line."""


def first_line(e: BaseException) -> str:
    """What an exception from a library says, in one line: its message's first line, or its type."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread so that it unwinds like Ctrl-C (which removes
    temporary outputs) and ends the process with 128 + the signal number."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum

    @staticmethod
    def exit_code_of(e):
        return 128 + e.signum if isinstance(e, Terminated) else 130

    @staticmethod
    def describe(e):
        import signal
        return f"terminated by {signal.Signals(e.signum).name}" if isinstance(e, Terminated) else "interrupted"
