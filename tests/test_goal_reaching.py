"""Goal reaching data and tasks (paper section 4.2, appendix F): the four-rooms PointMaze and
MiniGrid MultiRoom, their held-out evaluation pairs and maps, and the evaluation's actions."""

import numpy as np
import pytest
from gymnasium.spaces import Box, Discrete

from trajectory_transformer import gridworld, mazes
from trajectory_transformer.datasets import FetchSpec, ObservationSpec, fetch, load_transitions, open_dataset
from trajectory_transformer.errors import PipelineError
from trajectory_transformer.evaluation import environment_action
from trajectory_transformer.trajectories import SequenceSpec, path_goals


def cell_of(maze_env, position) -> tuple[int, int]:
    return tuple(int(v) for v in maze_env.maze.cell_xy_to_rowcol(np.asarray(position)))


def test_held_out_pairs_are_disjoint_from_training_pairs_and_cover_every_pair():
    training, held_out = mazes.start_goal_pairs("fourrooms")
    cells = mazes.free_cells(mazes.LAYOUTS["fourrooms"])
    assert len(cells) == 40  # four 3 x 3 rooms and four doorways
    assert len(held_out) == mazes.HELD_OUT_PAIRS and not set(training) & set(held_out)
    assert len(training) + len(held_out) == 40 * 39
    assert all(start != goal for start, goal in held_out)


def test_the_goal_reaching_task_starts_each_seed_at_its_held_out_pair_and_the_expert_reaches_it():
    env = mazes.make_evaluation_env("fourrooms")
    held_out = mazes.start_goal_pairs("fourrooms")[1]
    rng = np.random.default_rng(0)
    for seed in range(4):
        obs, _ = env.reset(seed=seed)
        start, goal = held_out[seed]
        assert cell_of(env.unwrapped, obs["achieved_goal"]) == start and cell_of(env.unwrapped, obs["desired_goal"]) == goal
        expert = mazes.WaypointExpert(env.unwrapped, mazes.LAYOUTS["fourrooms"], rng)
        for _ in range(mazes.EPISODE_STEPS["fourrooms"]):
            state = obs["observation"]
            obs, reward, terminated, truncated, info = env.step(np.clip(expert.action(state[:2], state[2:], obs["desired_goal"]), -1, 1))
            if terminated or truncated:
                break
        assert terminated and info["success"] and reward == 1.0  # reaching the goal ends the episode


@pytest.fixture(scope="module")
def fourrooms(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "fourrooms"
    fetch(FetchSpec(source="generate", generator="pointmaze-goals", maze="fourrooms", episodes=12, reference_episodes=2), "fourrooms", out)
    return out


def test_generated_four_rooms_episodes_use_training_pairs_only_and_reach_their_goals(fourrooms):
    env = mazes.make_env("fourrooms", reset_target=False).unwrapped
    training, held_out = (set(pairs) for pairs in mazes.start_goal_pairs("fourrooms"))
    episodes = list(open_dataset(fourrooms).iterate_episodes())
    assert len(episodes) == 12
    reached = 0
    for episode in episodes:
        pair = (cell_of(env, episode.observations["achieved_goal"][0]), cell_of(env, episode.observations["desired_goal"][0]))
        assert pair in training and pair not in held_out
        reached += bool(episode.terminations[-1])
    assert reached >= 11  # the noisy expert nearly always arrives within the step limit
    data = load_transitions(fourrooms, ObservationSpec(task="goal-reaching", observation_keys=["observation"],
                                                       goal_dims=[0, 1], goal_key="desired_goal"))
    assert data.observations.shape[1] == 4 and data.maps is None


def test_a_goal_reaching_task_needs_its_goal_dims_and_key(fourrooms):
    with pytest.raises(PipelineError, match="goal_dims"):
        load_transitions(fourrooms, ObservationSpec(task="goal-reaching", observation_keys=["observation"]))


def test_generated_minigrid_episodes_run_on_training_maps_and_carry_them(tmp_path):
    out = tmp_path / "minigrid"
    fetch(FetchSpec(source="generate", generator="minigrid", episodes=6, reference_episodes=2, seed=4), "minigrid", out)
    spec = ObservationSpec(task="goal-reaching", observation_keys=["state"], goal_dims=[0, 1], goal_key="goal", map_key="map")
    data = load_transitions(out, spec)
    episodes = list(open_dataset(out).iterate_episodes())
    env = gridworld.make_env()
    start = 0
    for reset_seed, episode in zip(gridworld.training_seeds(4, 6), episodes):
        assert not gridworld.is_held_out(reset_seed)
        env.reset(seed=reset_seed)  # the map of the seed the generator drew for this episode
        steps = len(episode.actions)
        assert (data.maps[start : start + steps] == env.map).all()
        assert np.array_equal(episode.observations["goal"][0], env.goal_position)
        start += steps
    assert data.observations.shape[1] == 4 and set(np.unique(data.actions)) <= {0, 1, 2, 3}
    # a path's goal is the square it ends on, the goal square the evaluation names, not the one
    # its last step starts from (next to the goal)
    goals = path_goals(data, SequenceSpec(), [0, 1])
    assert np.array_equal(goals, np.stack([episode.observations["goal"][0] for episode in episodes]))


def test_evaluation_actions_fit_their_action_space():
    assert environment_action(Discrete(4), np.array([2.6])) == (3, pytest.approx(np.array([3.0])))
    index, recorded = environment_action(Discrete(4), np.array([7.2]))
    assert index == 3 and recorded.tolist() == [3.0]  # the model's tokens record what was executed
    clipped, kept = environment_action(Box(-1, 1, (2,)), np.array([1.5, -0.2]))
    assert clipped.tolist() == pytest.approx([1.0, -0.2]) and kept.tolist() == [1.5, -0.2]


def test_the_four_rooms_figure_is_deterministic(tmp_path):
    episodes = [{"path": [[-2.0, 2.0], [-1.0, 2.0], [0.0, 2.0]], "goal": [2.0, -2.0], "success": False},
                {"path": [[2.0, 2.0], [2.0, 1.0]], "goal": [2.0, 1.0], "success": True}]
    mazes.draw_paths("fourrooms", episodes, tmp_path / "a.png")
    mazes.draw_paths("fourrooms", episodes, tmp_path / "b.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert (tmp_path / "a.png").stat().st_size > 1000


def test_a_maze_without_a_fixed_goal_is_refused_for_offline_rl_data():
    with pytest.raises(PipelineError, match="'fourrooms' has no fixed evaluation goal"):
        FetchSpec(source="generate", generator="pointmaze", maze="fourrooms", transitions=10).check("datasets.x.fetch")
    with pytest.raises(PipelineError, match="goal-reaching data need one of"):
        FetchSpec(source="generate", generator="pointmaze-goals", maze="umaze", episodes=10).check("datasets.x.fetch")


def test_the_experts_action_noise_is_the_action_noise_param(tmp_path, fourrooms):
    """The noise decides how much of each action the goal explains: a param, recorded in the metadata."""
    quiet = tmp_path / "quiet"
    fetch(FetchSpec(source="generate", generator="pointmaze-goals", maze="fourrooms", episodes=4, reference_episodes=1,
                    action_noise=0.0), "quiet", quiet)

    def mean_action_change(folder) -> float:
        return float(np.mean([np.abs(np.diff(episode.actions, axis=0)).mean() for episode in open_dataset(folder).iterate_episodes()]))

    assert mean_action_change(quiet) < 0.1 < 0.2 < mean_action_change(fourrooms)  # the PD controller alone is smooth
    assert "N(0, 0^2)" in open_dataset(quiet).storage.metadata["algorithm_name"]
