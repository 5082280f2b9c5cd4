"""``dacli`` and ``python -m dacli``: what the process needs before any work, then the command line.

Signal handling is set here, on purpose, for the command-line process only (never on import):
SIGTERM and SIGHUP end the run the way Ctrl-C does (temporary outputs removed, one line, exit
128 + signal number), and SIGXFSZ is ignored so that a write past the file-size limit fails with an
error message instead of killing the process. The command line's modules (torch among them) are
imported after that, so an interrupt during start-up is reported like any other: one line, exit 130
(Ctrl-C) or 128 + the signal, wherever it lands.
"""

import os
import signal
import sys

from .errors import Terminated

INTERRUPTED = {130, 128 + signal.SIGTERM, 128 + signal.SIGHUP}


def _terminate(signum, frame):
    raise Terminated(signum)


def _exit_now(code):
    """End an interrupted run with ``code`` at once. By now the interrupt has been reported and the
    unwinding has removed every temporary output; interpreter shutdown is skipped because, after a
    Ctrl-C, it sometimes ended the process by SIGINT instead of the exit code (exit status -2 after
    the one-line message, about one run in 16 under load, interrupting during start-up)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _interrupt_behind(e: BaseException):
    """The KeyboardInterrupt (or Terminated) that caused ``e``, if one did: an interrupt that lands
    while Python runs a class body's ``__set_name__`` (a dataclass field in a module being imported)
    comes out wrapped in a RuntimeError."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def _run() -> int:
    """The command line, with one policy for an interrupt wherever it lands: while importing, while
    click parses the arguments (a signal that arrives during the last C call of an import is handled
    at the next Python instruction, which can be click's), or inside a command. click's own handling
    of Ctrl-C ("Aborted!", exit 1) is never used: it runs with ``standalone_mode=False`` and its
    exceptions are reported here."""
    from .cli import cli
    import click

    try:
        rv = cli.main(prog_name="dacli", standalone_mode=False)
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.Abort as e:  # click turns a KeyboardInterrupt into Abort, keeping it as the cause
        raise e.__cause__ if isinstance(e.__cause__, KeyboardInterrupt) else KeyboardInterrupt() from None
    return rv if isinstance(rv, int) else 0  # an int is click's exit code (--help, --version)


def main():
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        code = _run()
    except KeyboardInterrupt as e:
        print(f"dacli: error: {Terminated.describe(e)}", file=sys.stderr)
        code = Terminated.exit_code_of(e)
    except Exception as e:
        interrupt = _interrupt_behind(e)
        if interrupt is None:
            raise
        print(f"dacli: error: {Terminated.describe(interrupt)}", file=sys.stderr)
        code = Terminated.exit_code_of(interrupt)
    except SystemExit as e:
        if e.code not in INTERRUPTED:
            raise
        code = e.code
    if code in INTERRUPTED:
        _exit_now(code)
    sys.exit(code)


if __name__ == "__main__":
    main()
