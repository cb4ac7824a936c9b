"""The Trajectory Transformer: data, discretization, model, planner and evaluation.

This package knows nothing of DVC; the thin commands in `stages/` call it.
"""

__version__ = "0.1.0"

import contextlib
import io

# gymnasium-robotics prints a notice about Adroit envs we never use to stderr at import; a
# stage's error must stay one line, so the package imports it once here, with stderr captured.
with contextlib.redirect_stderr(io.StringIO()):
    import gymnasium_robotics  # noqa: F401
