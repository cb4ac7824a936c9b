import gymnasium as gym
import matplotlib.image
import mujoco
import numpy as np
import pytest

from trajectory_transformer.errors import PipelineError
from trajectory_transformer.rendering import HEADER_PIXELS, observations_to_states, offline_gl_backend, render_filmstrip


def rollout(env_id: str, steps: int = 6) -> np.ndarray:
    """Seeded observations of random actions, stopping early if the episode ends.

    Each is the observation of the state the env is in after the step, with body positions brought
    up to date: after an RK4 step (Reacher) MuJoCo leaves them from an intermediate stage, so the
    fingertip - target entries of `step`'s own observation are off by a few 1e-6.
    """
    env = gym.make(env_id)
    env.reset(seed=0)
    env.action_space.seed(0)
    observations = [env.unwrapped._get_obs()]
    for _ in range(steps):
        stepped, _, terminated, truncated, _ = env.step(env.action_space.sample())
        mujoco.mj_kinematics(env.unwrapped.model, env.unwrapped.data)
        observations.append(env.unwrapped._get_obs())
        np.testing.assert_allclose(observations[-1], stepped, atol=1e-4)
        if terminated or truncated:
            break
    env.close()
    return np.array(observations)


@pytest.mark.parametrize("env_id", ["Reacher-v5", "Hopper-v5"])
def test_states_reproduce_the_observations(env_id):
    observations = rollout(env_id)
    qpos, qvel = observations_to_states(env_id, observations)
    env = gym.make(env_id)
    env.reset(seed=1)  # a different episode: every observed quantity must come from the states set below
    for step, observation in enumerate(observations):
        env.unwrapped.set_state(qpos[step], qvel[step])
        np.testing.assert_allclose(env.unwrapped._get_obs(), observation, atol=1e-6)
    env.close()


def test_root_x_is_integrated_from_the_x_velocity():
    observations = np.zeros((5, 11))
    observations[:, 5] = 2.0  # Hopper's qvel[0], the root x velocity, after the 5 entries of qpos[1:]
    qpos, _ = observations_to_states("Hopper-v5", observations)
    env = gym.make("Hopper-v5")
    dt = env.unwrapped.dt
    env.close()
    np.testing.assert_allclose(qpos[:, 0], 2.0 * dt * np.arange(5))


def test_unknown_env_and_wrong_shape_are_one_line_errors():
    with pytest.raises(PipelineError, match="Reacher-v5, Hopper-v5, Walker2d-v5, HalfCheetah-v5"):
        observations_to_states("Ant-v5", np.zeros((3, 27)))
    with pytest.raises(PipelineError, match=r"\(T, 10\)"):
        observations_to_states("Reacher-v5", np.zeros((3, 11)))


def test_frames_outside_a_row_are_refused_before_rendering(tmp_path):
    with pytest.raises(PipelineError, match="outside row 'true'"):
        render_filmstrip("egl", "Reacher-v5", {"true": rollout("Reacher-v5", 3)}, [0, 9], tmp_path / "strip.png")
    assert not list(tmp_path.iterdir())


def test_backend_is_found_or_reported_in_one_line():
    backend, message = offline_gl_backend()
    assert message.strip() and "\n" not in message
    assert backend is None or message.endswith(f"MUJOCO_GL={backend}")


def test_filmstrip_has_one_cell_per_row_and_frame(tmp_path):
    backend, message = offline_gl_backend()
    if backend is None:
        pytest.skip(message)
    true = rollout("Reacher-v5")
    rows = {"true": true, "Trajectory Transformer": true + 0.01, "Gaussian ensemble": true - 0.01}
    path = tmp_path / "figures" / "filmstrip.png"
    render_filmstrip(backend, "Reacher-v5", rows, [0, 3, 6], path, size=64)
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (HEADER_PIXELS + 3 * 64, 4 * 64)
    cell = image[HEADER_PIXELS:HEADER_PIXELS + 64, 64:128]
    assert cell.std() > 0.01  # a rendered scene, not a blank cell
    assert [p.name for p in path.parent.iterdir()] == ["filmstrip.png"]  # no scratch file left behind
