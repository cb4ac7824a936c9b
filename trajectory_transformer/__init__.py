"""The Trajectory Transformer: data, discretization, model, planner and evaluation.

This package knows nothing of DVC; the thin commands in `stages/` call it.
"""

__version__ = "0.1.0"
