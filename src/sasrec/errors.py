"""The one exception type a user sees as a one-line error, and how it ends a command."""

import contextlib
import sys
from collections.abc import Iterator

USAGE_ERROR_EXIT_CODE = 2  # as argparse exits on a bad command line


class SASRecError(Exception):
    """A user-facing error: the message names the input, what is wrong and what to do."""


@contextlib.contextmanager
def exit_on_error(command: str) -> Iterator[None]:
    """End the process with one line on stderr and exit code 2 on a `SASRecError`.

    The CLI and every KFP component run their step inside it, so that a bad input reads
    the same in a terminal and in a pod's log: no traceback.
    """
    try:
        yield
    except SASRecError as err:
        print(f"sasrec {command}: error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(USAGE_ERROR_EXIT_CODE) from None
