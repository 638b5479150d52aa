"""The one error type every builder step raises."""


class BuildError(Exception):
    """A build step failed; the message says which step and what to do about it."""
