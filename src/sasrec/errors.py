"""The one exception type a user sees as a one-line error, and how it ends a command."""

import contextlib
import re
import sys
from collections.abc import Iterator

USAGE_ERROR_EXIT_CODE = 2  # as argparse exits on a bad command line
_LOGIN = re.compile(r"(?<=://)[^/\s@]+@")  # the user:password@ of any URI in a text


class SASRecError(Exception):
    """A user-facing error: the message names the input, what is wrong and what to do."""


class ServiceUnavailable(SASRecError):
    """A service (MLflow, an object store) did not answer or refused: a rerun may succeed."""


@contextlib.contextmanager
def exit_on_error(command: str) -> Iterator[None]:
    """End the process with one line on stderr and exit code 2 on a `SASRecError`.

    The CLI and every KFP component run their step inside it, so that a bad input reads
    the same in a terminal and in a pod's log: no traceback.
    """
    try:
        yield
    except SASRecError as err:
        print(f"sasrec {command}: error: {one_line(err)}", file=sys.stderr, flush=True)
        raise SystemExit(USAGE_ERROR_EXIT_CODE) from None


def without_logins(text: str) -> str:
    """`text` with the `user:password@` of every URI in it removed."""
    return _LOGIN.sub("", text)


def one_line(err: BaseException, limit: int = 1000) -> str:
    """An error as one line without credentials: its message, or its type and message."""
    text = str(err) if isinstance(err, SASRecError) else f"{type(err).__name__}: {err}"
    text = " ".join(without_logins(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
