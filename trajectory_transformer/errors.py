"""The one error type a user should ever see: a single line naming the problem and the fix."""


class PipelineError(Exception):
    """Bad input or a missing prerequisite; stages print it as one line and exit non-zero."""


# the fix for an artifact that is not what its stage wrote
RESTORE_OR_REBUILD = "restore it (`dvc checkout`, or `dvc pull`) or rebuild it (`dvc repro --force` of its stage)"
