"""The one error type a user should ever see: a single line naming the problem and the fix."""


class PipelineError(Exception):
    """Bad input or a missing prerequisite; stages print it as one line and exit non-zero."""
