"""Offline pictures of MuJoCo states: the paper's Figure 2, a filmstrip of a true trajectory beside
model-predicted ones (each a sequence of observation vectors).

An observation is turned back into a simulator state (`observations_to_states`), set into the
environment and rendered without a display, through MuJoCo's EGL or OSMesa backend. MuJoCo and
PyOpenGL pick their OpenGL platform from `MUJOCO_GL` / `PYOPENGL_PLATFORM` once, when they are first
imported, and this process may already have imported them (evaluation does) or may have no working
backend at all. So both the availability probe and the rendering itself run in a fresh child Python
with those variables set from its start; this process only converts observations, checks inputs
and lays the frames out with matplotlib. Where no backend works, `offline_gl_backend` says so in one
line instead of a traceback, and callers skip the figure.
"""

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import gymnasium as gym
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from trajectory_transformer.errors import PipelineError

REACHER = "Reacher-v5"
# Their observations are qpos[1:] then qvel: the root x position is left out.
LOCOMOTION = ("Hopper-v5", "Walker2d-v5", "HalfCheetah-v5")
SUPPORTED = (REACHER, *LOCOMOTION)

HEADER_PIXELS = 24  # the strip of frame indices above the cells
_DPI = 100
_PROBE_TIMEOUT_S = 60
_RENDER_TIMEOUT_S = 600

# Renders one frame of a one-sphere scene. It frees the context before exit: left to the garbage
# collector, EGL is already terminated by then and prints a spurious EGLError traceback. A failure
# is printed as one line and the process ends at once, skipping the destructors of a half-made
# context, whose own tracebacks would bury the cause.
_PROBE = """
import os, sys
try:
    import mujoco
    model = mujoco.MjModel.from_xml_string('<mujoco><worldbody><geom size="1"/></worldbody></mujoco>')
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    with mujoco.Renderer(model, 16, 16) as renderer:
        renderer.update_scene(data)
        assert renderer.render().any(), 'the rendered frame is all black'
except Exception as error:
    print(f'{type(error).__name__}: {error}', file=sys.stderr, flush=True)
    os._exit(1)
"""


def _backend_environment(backend: str) -> dict[str, str]:
    """Environment of a child process that renders with `backend`."""
    environment = {**os.environ, "MUJOCO_GL": backend}
    if backend in ("egl", "osmesa"):
        # mujoco.egl / mujoco.osmesa refuse a PYOPENGL_PLATFORM naming another platform
        environment["PYOPENGL_PLATFORM"] = backend
    return environment


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:160] if lines else "no error message"


def offline_gl_backend() -> tuple[str | None, str]:
    """(backend, message): the first of MUJOCO_GL (if set), 'egl', 'osmesa' that renders a frame in a
    fresh subprocess; (None, one-line reason naming the fix) if none does."""
    candidates = dict.fromkeys(name for name in (os.environ.get("MUJOCO_GL", "").strip().lower(), "egl", "osmesa") if name)
    failures = []
    for backend in candidates:
        try:
            probe = subprocess.run([sys.executable, "-c", _PROBE], env=_backend_environment(backend),
                                   capture_output=True, text=True, timeout=_PROBE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            failures.append(f"{backend}: no frame within {_PROBE_TIMEOUT_S} s")
            continue
        if probe.returncode == 0:
            return backend, f"MuJoCo renders offline with MUJOCO_GL={backend}"
        failures.append(f"{backend}: {_last_line(probe.stderr)}")
    return None, (f"no offline OpenGL backend for MuJoCo ({'; '.join(failures)}): "
                  "install Mesa's libegl1 or libosmesa6, or run on a machine with EGL")


def observations_to_states(env_id: str, observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(qpos, qvel) per step, shapes (T, nq) and (T, nv), for a (T, N) array of observations.

    Reacher-v5: joint angles from their cos/sin entries, the target position, the joint velocities
    (the target never moves); fingertip - target follows from these positions. Hopper, Walker2d and
    HalfCheetah: the root x position, which their observations omit, is integrated from the root x
    velocity (trapezoid rule, starting at 0) so the body advances over the floor (their default
    cameras follow it, so the floor is what moves in the frame); Hopper and Walker2d observations clip velocities to +-10, so the
    recovered velocities are clipped too (rendering uses positions only).
    """
    if env_id not in SUPPORTED:
        raise PipelineError(f"cannot render {env_id!r}: observations_to_states supports {', '.join(SUPPORTED)}")
    env = gym.make(env_id)
    model, dt, width = env.unwrapped.model, env.unwrapped.dt, env.observation_space.shape[0]
    env.close()
    observations = np.asarray(observations, dtype=np.float64)
    if observations.ndim != 2 or observations.shape[1] != width or len(observations) == 0:
        raise PipelineError(f"{env_id} observations must be a (T, {width}) array with T >= 1; got shape {observations.shape}")
    if env_id == REACHER:
        # obs = cos(q[:2]), sin(q[:2]), target x y (qpos[2:]), qvel[:2], fingertip - target
        angles = np.arctan2(observations[:, 2:4], observations[:, 0:2])
        qpos = np.concatenate([angles, observations[:, 4:6]], axis=1)
        qvel = np.concatenate([observations[:, 6:8], np.zeros((len(observations), model.nv - 2))], axis=1)
        return qpos, qvel
    qvel = observations[:, model.nq - 1:]
    x = np.concatenate([[0.0], np.cumsum(dt * (qvel[1:, 0] + qvel[:-1, 0]) / 2)])
    return np.concatenate([x[:, None], observations[:, :model.nq - 1]], axis=1), qvel


def _render_states(env_id: str, size: str, states_path: str, images_path: str) -> None:
    """In the rendering child: render every (row, column) state saved in `states_path` to `images_path`."""
    with np.load(states_path) as states:
        qpos, qvel = states["qpos"], states["qvel"]
    env = gym.make(env_id, render_mode="rgb_array", width=int(size), height=int(size))
    try:
        env.reset(seed=0)  # gymnasium refuses to render before the first reset
        images = np.zeros((*qpos.shape[:2], int(size), int(size), 3), np.uint8)
        for cell in np.ndindex(qpos.shape[:2]):
            env.unwrapped.set_state(qpos[cell], qvel[cell])
            images[cell] = env.render()
    finally:
        env.close()  # frees the GL context now, not after EGL has been terminated at exit (see _PROBE)
    np.save(images_path, images)


def _render_in_child(backend: str, env_id: str, qpos: np.ndarray, qvel: np.ndarray, size: int) -> np.ndarray:
    """(rows, columns, size, size, 3) images of the states, rendered by a child Python using `backend`."""
    package_root = str(Path(__file__).resolve().parent.parent)
    environment = _backend_environment(backend)
    # the child imports this module from wherever it is started
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, environment.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory() as scratch:
        states, images = Path(scratch, "states.npz"), Path(scratch, "images.npy")
        np.savez(states, qpos=qpos, qvel=qvel)
        command = [sys.executable, "-c",
                   "import sys; from trajectory_transformer.rendering import _render_states; _render_states(*sys.argv[1:])",
                   env_id, str(size), str(states), str(images)]
        try:
            child = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=_RENDER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise PipelineError(f"rendering {env_id} with MUJOCO_GL={backend} took over {_RENDER_TIMEOUT_S} s; "
                                "render fewer frames") from None
        if child.returncode != 0:
            raise PipelineError(f"rendering {env_id} with MUJOCO_GL={backend} failed: {_last_line(child.stderr)}")
        return np.load(images)


def render_filmstrip(backend: str, env_id: str, rows: dict[str, np.ndarray], frames: list[int], path: Path,
                     size: int = 160) -> None:
    """One PNG, rendered with the GL `backend` that `offline_gl_backend` found: a row per entry of
    `rows` (label -> (T, N) observations), a column per frame index, each cell the rendered env
    state; labels on the left, frame indices on top. Stages write it inside an atomic directory.

    Pixel-exact layout: (len(frames) + 1) * size wide (the first column holds the wrapped labels),
    HEADER_PIXELS + len(rows) * size high. Raises PipelineError (one line) for bad input or a
    failed render.
    """
    if not rows or not frames:
        raise PipelineError("render_filmstrip needs at least one row and one frame index")
    qpos, qvel = [], []
    for label, observations in rows.items():
        row_qpos, row_qvel = observations_to_states(env_id, observations)
        outside = [frame for frame in frames if not 0 <= frame < len(row_qpos)]
        if outside:
            raise PipelineError(f"frames {outside} are outside row {label!r}, which has {len(row_qpos)} steps")
        qpos.append(row_qpos[frames])
        qvel.append(row_qvel[frames])
    images = _render_in_child(backend, env_id, np.stack(qpos), np.stack(qvel), size)

    width, height = (len(frames) + 1) * size, HEADER_PIXELS + len(rows) * size
    # Figure and canvas directly, not pyplot: no global figure state, no GUI backend
    figure = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI, facecolor="white")
    FigureCanvasAgg(figure)
    for column, frame in enumerate(frames):
        figure.text(((column + 1.5) * size) / width, 1 - HEADER_PIXELS / 2 / height, f"t = {frame}",
                    ha="center", va="center", fontsize=10)
    for row, label in enumerate(rows):
        bottom = height - HEADER_PIXELS - (row + 1) * size
        figure.text(0.5 * size / width, (bottom + size / 2) / height, "\n".join(textwrap.wrap(label, max(size // 8, 8))),
                    ha="center", va="center", fontsize=10)
        for column in range(len(frames)):
            # figimage places the pixels unresampled, at pixel offsets from the bottom-left corner
            figure.figimage(images[row, column], xo=(column + 1) * size, yo=bottom, origin="upper")

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=_DPI)
