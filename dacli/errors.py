"""The one exception type dacli raises for user-facing problems.

Anything raised as a :class:`DacliError` is a mistake in the input (a missing file, a corrupt
checkpoint, a truncated ``.dac``) rather than a bug: the command line prints its message on one
line and exits non-zero, without a traceback.
"""


class DacliError(Exception):
    """A problem with the user's input, reported as one clear line."""
