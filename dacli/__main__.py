"""``dacli`` and ``python -m dacli``: what the process needs before any work, then the command line.

Signal handling is set here, on purpose, for the command-line process only (never on import):
SIGTERM and SIGHUP end the run the way Ctrl-C does (temporary outputs removed, one line, exit
128 + signal number), and SIGXFSZ is ignored so that a write past the file-size limit fails with an
error message instead of killing the process. The command line's modules (torch among them) are
imported after that, so an interrupt during start-up is reported like any other.
"""

import signal
import sys

from .errors import Terminated


def _terminate(signum, frame):
    raise Terminated(signum)


def main():
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        from .cli import cli
    except KeyboardInterrupt as e:
        print(f"dacli: error: {Terminated.describe(e)}", file=sys.stderr)
        sys.exit(Terminated.exit_code_of(e))
    cli(prog_name="dacli")


if __name__ == "__main__":
    main()
