"""The one exception type for user mistakes: the CLI prints its message on one line and exits 2."""


class PctError(Exception):
    """A user-facing error; the message names the problem and the offending value."""
