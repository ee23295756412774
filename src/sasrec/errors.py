"""The one exception type the CLI turns into a one-line error and a non-zero exit code."""


class SASRecError(Exception):
    """A user-facing error: the message names the input, what is wrong and what to do."""
