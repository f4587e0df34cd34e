"""The one exception type a user sees: a mistake in their input, told in one line."""


class LenetError(Exception):
    """A user-facing error: bad input, missing data, a corrupt file. The CLI prints it as one line, exit 2."""
