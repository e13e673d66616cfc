"""How every command of the project ends: one line on stderr and a documented exit status.

The CLI (``splitbrain-hub ...``, serve included) and the ``python -m training.*`` modules run their body
through ``run``. A failure prints ``error: <what failed, the path, the cause in words>`` and nothing else;
the traceback, for a bug report, only with ``--debug`` (the CLI) or ``SPLITBRAIN_HUB_DEBUG=1`` (any command).

Exit status:

====  ======================================================================================================
0     all done
1     some inputs failed (each was reported; the others are done)
2     bad usage: an argument, input or weights file the command cannot use (``SplitBrainError``)
3     the environment: a full disk, a read-only file system, no permission, a file where a folder goes
      (``OSError``, ``StorageError``); free space or fix the path and rerun the same command
4     an unexpected error: a bug; rerun with ``SPLITBRAIN_HUB_DEBUG=1`` and report the traceback
130   interrupted (Ctrl-C)
====  ======================================================================================================
"""
import os
import sys
import traceback
from collections.abc import Callable

from .errors import SplitBrainError
from .files import cause

__all__ = ['DEBUG_ENV', 'EXIT_BUG', 'EXIT_ENVIRONMENT', 'EXIT_FAILED_INPUTS', 'EXIT_INTERRUPTED', 'EXIT_OK',
           'EXIT_USAGE', 'describe', 'exit_status', 'run']

EXIT_OK, EXIT_FAILED_INPUTS, EXIT_USAGE, EXIT_ENVIRONMENT, EXIT_BUG, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
DEBUG_ENV = 'SPLITBRAIN_HUB_DEBUG'


def exit_status(error: Exception) -> int:
    """The documented exit status a command ends with when ``error`` escapes it."""
    if isinstance(error, OSError):  # before SplitBrainError: a StorageError is both
        return EXIT_ENVIRONMENT
    if isinstance(error, SplitBrainError):
        return EXIT_USAGE
    return EXIT_BUG


def describe(error: Exception) -> str:
    """``error`` as one line: the package's own messages as they are, an ``OSError`` as path and cause."""
    if isinstance(error, SplitBrainError):
        text = str(error)
    elif isinstance(error, OSError):
        text = f'{error.filename}: {cause(error)}' if error.filename else cause(error)
    else:
        text = (f'unexpected {type(error).__name__}: {error} (a bug: rerun with {DEBUG_ENV}=1 and report the '
                'traceback)')
    return ' '.join(text.split())  # one line, even when a message quotes a multi-line one


def _debugging(debug: bool) -> bool:
    return debug or os.environ.get(DEBUG_ENV, '') not in ('', '0')


def run(command: Callable[[], int | None], debug: bool = False,
        interrupted: str = 'interrupted; rerun the same command to continue') -> int:
    """``command()``'s exit status (None counts as 0); an exception ends as the module docstring says."""
    try:
        return command() or EXIT_OK
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        if _debugging(debug):
            traceback.print_exc()
        print(f'error: {describe(e)}', file=sys.stderr)
        return exit_status(e)
