import hashlib
from pathlib import Path

import numpy as np
import pytest

from trajectory_transformer import behavior, mazes
from trajectory_transformer.config import parse
from trajectory_transformer.datasets import (
    DatasetSpec, FetchSpec, ObservationSpec, fetch, load_transitions, open_dataset, summary,
)
from trajectory_transformer.errors import PipelineError


def digest(folder: Path) -> str:
    md5 = hashlib.md5()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            md5.update(path.relative_to(folder).as_posix().encode())
            md5.update(path.read_bytes())
    return md5.hexdigest()


@pytest.fixture(scope="module")
def umaze(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "umaze"
    fetch(FetchSpec(source="generate", generator="pointmaze", maze="umaze", transitions=3000, reference_episodes=3), "umaze", out)
    return out


def test_maze_layouts_are_the_envs_own_maps():
    """The expert plans on LAYOUTS while the fixed-goal envs are built from their registered ids:
    a layout that differs from the env's own walls would send the expert into a wall."""
    from gymnasium_robotics.envs.maze import maps

    published = {"umaze": maps.U_MAZE, "medium": maps.MEDIUM_MAZE, "large": maps.LARGE_MAZE}
    assert set(mazes.EVALUATION_CELLS) == set(published)
    for maze, layout in published.items():
        assert mazes.LAYOUTS[maze] == layout, maze
        assert mazes.make_env(maze, reset_target=False).unwrapped.maze.maze_map == layout, maze
        goal_row, goal_col = mazes.EVALUATION_CELLS[maze]["goal_cell"]
        assert layout[goal_row][goal_col] == 0, maze


@pytest.mark.parametrize("maze", ["umaze", "medium", "large"])
def test_pointmaze_expert_reaches_the_evaluation_goal(maze):
    """The data policy itself (noise included) solves the evaluation task in >= 95% of episodes."""
    reached = 0
    for episode in range(20):
        env = mazes.make_evaluation_env(maze)
        obs, _ = env.reset(seed=episode)
        rng = np.random.default_rng(episode)
        expert = mazes.WaypointExpert(env.unwrapped, mazes.LAYOUTS[maze], rng)
        for _ in range(mazes.EPISODE_STEPS[maze]):
            state = obs["observation"]
            action = expert.action(state[:2], state[2:], env.evaluation_goal) + rng.normal(0, 0.5, 2)
            obs, _, _, _, info = env.step(np.clip(action, -1, 1))
            if info["success"]:
                reached += 1
                break
    assert reached >= 19


def test_q_iteration_heads_along_the_corridor():
    values = mazes.q_iteration(mazes.LAYOUTS["umaze"], (1, 1))
    # from the bottom-left cell the only way to the top-left goal is around the U
    assert mazes.next_cell(mazes.LAYOUTS["umaze"], values, (3, 1)) == (3, 2)
    assert mazes.next_cell(mazes.LAYOUTS["umaze"], values, (1, 3)) == (1, 2)


def test_continuing_run_is_cut_at_each_success(umaze):
    episodes = list(open_dataset(umaze).iterate_episodes())
    assert len(episodes) > 5
    for episode in episodes[:-1]:
        assert episode.truncations[-1] and not episode.terminations.any()
        final = episode.observations
        assert mazes.goal_reached(final["achieved_goal"][-1], final["desired_goal"][-1])
    # consecutive episodes continue one run: each starts where the previous ended
    for before, after in zip(episodes, episodes[1:]):
        assert np.array_equal(before.observations["observation"][-1], after.observations["observation"][0])


def test_offline_rl_task_hides_the_goal_and_rewards_the_evaluation_goal(umaze):
    data = load_transitions(umaze, ObservationSpec(task="offline-rl", observation_keys=["observation"]))
    assert data.observations.shape[1] == 4
    goal = mazes.evaluation_goal("umaze")
    # reward t is for the position reached after action t: the next row's position
    next_position = np.roll(data.observations[:, :2], -1, axis=0)
    inside = ~(data.timeouts | data.terminals)
    expected = mazes.goal_reached(next_position, goal)
    assert np.array_equal(data.rewards[inside].astype(bool), expected[inside])
    assert 0 < data.rewards.sum() < len(data.rewards)


def test_goal_conditioned_task_appends_each_episodes_own_goal(umaze):
    spec = ObservationSpec(task="goal-conditioned", observation_keys=["observation", "desired_goal"])
    data = load_transitions(umaze, spec)
    assert data.observations.shape[1] == 6
    episodes = list(open_dataset(umaze).iterate_episodes())
    first_length = len(episodes[1].actions)
    start = len(episodes[0].actions)
    goals = data.observations[start : start + first_length, 4:]
    assert np.all(goals == goals[0])  # one goal for the whole episode, its first row included
    assert np.allclose(goals[0], episodes[1].observations["desired_goal"][-1])
    # each episode but the last ends by reaching its own goal
    ends = np.flatnonzero(data.timeouts)[:-1]
    assert np.all(data.rewards[ends] == 1.0)


def test_goal_conditioned_task_needs_the_goal_in_the_observation(umaze):
    with pytest.raises(PipelineError, match="desired_goal"):
        load_transitions(umaze, ObservationSpec(task="goal-conditioned", observation_keys=["observation"]))


def test_generation_is_byte_identical(tmp_path, umaze):
    spec = FetchSpec(source="generate", generator="pointmaze", maze="umaze", transitions=3000, reference_episodes=3)
    fetch(spec, "umaze", tmp_path / "again")
    assert digest(tmp_path / "again") == digest(umaze)
    reacher = FetchSpec(source="generate", generator="reacher", quality="medium-expert", episodes=10, reference_episodes=2)
    fetch(reacher, "r", tmp_path / "r1")
    fetch(reacher, "r", tmp_path / "r2")
    assert digest(tmp_path / "r1") == digest(tmp_path / "r2")


@pytest.mark.parametrize("generator, episode_steps", [("reacher", None), ("pendulum", 200)])
def test_controlled_qualities_are_ordered_by_mean_return(tmp_path, generator, episode_steps):
    scores = {}
    for quality in ("random", "medium-replay", "medium", "medium-expert", "expert"):
        spec = FetchSpec(source="generate", generator=generator, quality=quality, episodes=40, reference_episodes=20,
                         episode_steps=episode_steps)
        fetch(spec, quality, tmp_path / quality)
        scores[quality] = summary(tmp_path / quality)["normalized_score"]
    ordered = [scores[q] for q in ("random", "medium-replay", "medium", "medium-expert", "expert")]
    assert ordered == sorted(ordered), scores
    assert abs(scores["random"]) < 15 and scores["expert"] > 80


def test_reacher_records_what_doing_nothing_scores(tmp_path):
    """Zero actions cost no control, so their return is the fingertip distance alone (the env's
    `reward_dist`, summed independently here): the floor every Reacher method must clear."""
    import gymnasium as gym
    spec = FetchSpec(source="generate", generator="reacher", quality="medium-expert", episodes=4, reference_episodes=5)
    fetch(spec, "r", tmp_path / "r")
    recorded = summary(tmp_path / "r")
    env, distances = gym.make("Reacher-v5"), []
    for episode in range(5):
        env.reset(seed=episode)
        for _ in range(50):
            *_, info = env.step(np.zeros(2))
            assert info["reward_ctrl"] == 0.0
            distances.append(info["reward_dist"])
    assert recorded["zero_action_return"] == pytest.approx(sum(distances) / 5, rel=1e-9)
    assert recorded["reference_random_return"] < recorded["zero_action_return"] < recorded["reference_expert_return"]


def test_the_pendulum_lqr_stabilizes_the_upright_pendulum_and_its_medium_does_not_always():
    """The recorded gain against the env's own dynamics: linearized here by central differences
    of one env step, the closed loop is stable (spectral radius below 1) at full gain and at the
    medium's 0.6; the expert balances every 200-step episode, and the medium falls in some."""
    import gymnasium as gym
    import mujoco
    env = gym.make("InvertedDoublePendulum-v5", max_episode_steps=200)
    model, data, frame_skip = env.unwrapped.model, env.unwrapped.data, env.unwrapped.frame_skip

    def step(state, force):
        data.qpos[:], data.qvel[:], data.ctrl[:] = state[:3], state[3:], force
        for _ in range(frame_skip):
            mujoco.mj_step(model, data)
        return np.concatenate([data.qpos, data.qvel])

    eps, basis = 1e-5, np.eye(6)
    a = np.stack([(step(eps * e, 0.0) - step(-eps * e, 0.0)) / (2 * eps) for e in basis], axis=1)
    b = (step(np.zeros(6), eps) - step(np.zeros(6), -eps)) / (2 * eps)
    assert max(abs(np.linalg.eigvals(a))) > 1  # upright is unstable without control
    for scale in (1.0, behavior.PENDULUM_MEDIUM_GAIN):
        closed_loop = a - scale * np.outer(b, behavior.PENDULUM_LQR_GAIN)
        assert max(abs(np.linalg.eigvals(closed_loop))) < 1, scale

    def lengths(controller):
        rng, found = np.random.default_rng(0), []
        for episode in range(10):
            obs, _ = env.reset(seed=episode)
            for t in range(200):
                obs, _, terminated, truncated, _ = env.step(controller(obs, rng))
                if terminated or truncated:
                    break
            found.append(t + 1)
        return found

    assert lengths(behavior.PENDULUM_POLICIES["expert"]) == [200] * 10
    assert min(lengths(behavior.PENDULUM_POLICIES["medium"])) < 200


def test_reacher_expert_beats_random_by_a_wide_margin():
    env_rng = np.random.default_rng(0)
    import gymnasium as gym
    env = gym.make("Reacher-v5")
    obs, _ = env.reset(seed=0)
    total = 0.0
    for _ in range(50):
        obs, reward, *_ = env.step(behavior.REACHER_EXPERT(obs, env_rng))
        total += reward
    assert total > -15  # a random policy scores about -43


def test_unknown_minari_id_is_one_clear_line():
    spec = FetchSpec(source="minari", minari_id="hopper-medium")
    with pytest.raises(PipelineError, match="unknown dataset id 'hopper-medium'"):
        spec.check("datasets.x.fetch")


def test_no_network_and_nothing_cached_leaves_no_output(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # nothing listens: no download
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "empty-root"))
    spec = FetchSpec(source="minari", minari_id="mujoco/hopper/medium-v0")
    with pytest.raises(PipelineError) as error:
        fetch(spec, "hopper-medium", tmp_path / "work" / "out")
    message = str(error.value)
    assert f"mujoco/hopper/medium-v0 is not in the local Minari root {tmp_path / 'empty-root'}" in message
    assert "could not be downloaded" in message
    assert "dvc pull" in message and "suite=offline" in message and "\n" not in message
    assert list((tmp_path / "work").iterdir()) == []


def test_params_of_the_wrong_type_are_named():
    with pytest.raises(PipelineError, match=r"datasets.x.fetch.episodes: expected an integer >= 1 or null, got 'ten'"):
        parse(DatasetSpec, {"fetch": {"source": "generate", "episodes": "ten"}}, "datasets.x")
    with pytest.raises(PipelineError, match=r"datasets.x.fetch.source: expected one of 'minari', 'generate', got 'web'"):
        parse(DatasetSpec, {"fetch": {"source": "web"}}, "datasets.x")
    with pytest.raises(PipelineError, match="unknown key 'epsiodes'"):
        parse(DatasetSpec, {"fetch": {"source": "generate", "epsiodes": 3}}, "datasets.x")
