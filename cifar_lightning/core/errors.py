"""The library's own error types and exit statuses (framework-neutral: standard library only).

The commands print a ``CIFARError`` as one line and exit with its ``exit_code`` (``ExitCode``);
anything else is a bug and shows its traceback.
"""

from enum import IntEnum


class ExitCode(IntEnum):
    """Every exit status the commands give, in one place."""

    OK = 0
    FAILED = 1  # export.py: the exported file failed its check; nothing was written
    USAGE = 2  # bad input (a flag, a file, the data): nothing was trained
    DIVERGED = 3  # the run diverged: its last good checkpoint and its log are kept
    BUSY = 4  # --no-wait and another training holds the lock
    PROCESSES = 5  # one of several processes failed, was lost, or could not reach the others
    INTERRUPTED = 130  # Ctrl-C: the shell's status for a process ended by SIGINT (128 + 2)


class CIFARError(Exception):
    """Bad input, or a run that cannot go on: the message says what and what to do."""

    exit_code = ExitCode.USAGE


class UsageError(CIFARError):
    """A flag or file given on the command line is wrong."""


class NonFiniteLossError(CIFARError, FloatingPointError):
    """The training loss (or the weights) became NaN or infinite."""

    exit_code = ExitCode.DIVERGED


def _kept(last_checkpoint) -> str:
    return f"; the last good checkpoint is {last_checkpoint}" if last_checkpoint else "; no checkpoint was written yet"


def non_finite_message(value: float, step: int, last_checkpoint) -> str:
    """The one line both frameworks print when a run diverges."""
    return f"training loss became {value} at step {step}{_kept(last_checkpoint)}"


def non_finite_weight_message(name: str, step: int, last_checkpoint) -> str:
    """The one line both frameworks print when a step whose loss was finite left a weight or
    a BatchNorm statistic (`name`, the model's own key, as weight files name it) not finite:
    found before a checkpoint is written, so the last good one is kept."""
    return f"{name} is not finite after step {step}, whose training loss was finite{_kept(last_checkpoint)}"
