"""The library's own error types (framework-neutral: standard library only).

The scripts print a ``CIFARError`` as one line and exit with status 2 (3 for a run
that diverged); anything else is a bug and shows its traceback.
"""


class CIFARError(Exception):
    """Bad input, or a run that cannot go on: the message says what and what to do."""


class UsageError(CIFARError):
    """A flag or file given on the command line is wrong."""


class NonFiniteLossError(CIFARError, FloatingPointError):
    """The training loss (or the weights) became NaN or infinite."""


def non_finite_message(value: float, step: int, last_checkpoint) -> str:
    """The one line both frameworks print when a run diverges."""
    kept = f"; the last good checkpoint is {last_checkpoint}" if last_checkpoint else "; no checkpoint was written yet"
    return f"training loss became {value} at step {step}{kept}"
