"""The Trajectory Transformer: data, discretization, model, planner and evaluation.

This package knows nothing of DVC; the thin commands in `stages/` call it. What the pipeline
trained is usable from Python: `load_agent` (a TT, TT+Q, IQL or BC agent that acts in your own
environment) and `load_dataset` (a dataset's transitions, tokens and discretizer).
"""

__version__ = "0.1.0"

import contextlib
import importlib
import io
import os
import platform

# PyTorch picks CPU kernels by the instruction sets it finds, and AVX-512 kernels (ATen's and
# oneDNN's) round differently from AVX2 ones: on one Zen 4 machine, 20 training steps of the
# same seed gave other weights with AVX-512 than with both pinned to AVX2. Every x86-64 CPU these
# runs meet has AVX2, and at our model sizes the pin costs nothing measurable (2.55 against 2.55
# updates/s), so it is the default; torch reads both variables lazily, and a user's own wins.
if platform.machine().lower() in ("x86_64", "amd64"):
    os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")
    os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")

# gymnasium-robotics prints a notice about Adroit envs we never use to stderr at import; a
# stage's error must stay one line, so the package imports it once here, with stderr captured.
with contextlib.redirect_stderr(io.StringIO()):
    import gymnasium_robotics  # noqa: F401


# Imported on first use, not here: every stage imports this package, and DVC reruns a stage when
# a module it runs changes, so the planner must not become part of the training stages.
PUBLIC = {"load_agent": "evaluation", "load_dataset": "training"}


def __getattr__(name: str):
    if name in PUBLIC:
        return getattr(importlib.import_module(f"{__name__}.{PUBLIC[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
