"""``dacli`` and ``python -m dacli``: what the process needs before any work, then the command line.

Signal handling is set here, on purpose, for the command-line process only (never on import):
SIGTERM and SIGHUP end the run the way Ctrl-C does (temporary outputs removed, one line, exit
128 + signal number), and SIGXFSZ is ignored so that a write past the file-size limit fails with an
error message instead of killing the process. The command line's modules (torch among them) are
imported after that, so an interrupt during start-up is reported like any other.
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


def main():
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        from .cli import cli
    except KeyboardInterrupt as e:
        print(f"dacli: error: {Terminated.describe(e)}", file=sys.stderr)
        _exit_now(Terminated.exit_code_of(e))
    try:
        cli(prog_name="dacli")
    except SystemExit as e:
        if e.code in INTERRUPTED:
            _exit_now(e.code)
        raise


if __name__ == "__main__":
    main()
