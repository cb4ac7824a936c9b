"""The paper suite against Minari's real data layout (stand-ins made as Minari's generation
scripts made the real datasets), D4RL's task definitions and the published settings; and the
offline dress rehearsal of its whole DAG (`pytest -k rehearsal`)."""

import json
import shutil
from pathlib import Path

import gymnasium as gym
import minari
import numpy as np
import pytest
import yaml

from trajectory_transformer import antmaze, datasets, standins
from trajectory_transformer.datasets import FetchSpec, ObservationSpec, load_transitions, reference_returns
from trajectory_transformer.errors import PipelineError
from trajectory_transformer.evaluation import make_env
from trajectory_transformer.trajectories import SequenceSpec, joined_paths

ANTMAZE_OBSERVATION = ObservationSpec(task="fixed-goal", observation_keys=["achieved_goal", "observation"])


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A Minari root holding every stand-in."""
    path = tmp_path_factory.mktemp("minari")
    standins.make_standins(path)
    return path


def standin(root: Path, dataset_id: str) -> Path:
    return root / dataset_id


def env_goal(env_id: str, maze_map, cell) -> np.ndarray:
    """The centre of a cell as gymnasium-robotics' own maze computes it (independent of ours)."""
    env = gym.make(env_id, maze_map=maze_map)
    return env.unwrapped.maze.cell_rowcol_to_xy(np.array(cell))


def test_relabel_rewards_and_terminals_are_for_the_evaluation_goal(root):
    folder = standin(root, "D4RL/antmaze/medium-diverse-v1")
    dataset = minari.MinariDataset(folder / "data")
    evaluation_map = json.loads(dataset.storage.metadata["eval_env_spec"])["kwargs"]["maze_map"]
    goal_cell = next((r, c) for r, row in enumerate(evaluation_map) for c, v in enumerate(row) if v == "g")
    goal = env_goal("AntMaze_Medium_Diverse_GR-v4", evaluation_map, goal_cell)  # the script's G: D4RL's corner
    episodes = list(dataset.iterate_episodes())
    # as collected: each episode heads for a goal of its own, never the evaluation goal
    assert all(np.linalg.norm(e.observations["desired_goal"][0] - goal) > 2 for e in episodes)
    expected = np.concatenate([np.linalg.norm(e.observations["achieved_goal"][1:] - goal, axis=-1) <= 0.5 for e in episodes])
    stored = np.concatenate([e.rewards for e in episodes])
    transitions = load_transitions(folder, ANTMAZE_OBSERVATION)
    assert expected.sum() > 5 and not np.array_equal(stored > 0, expected)
    assert np.array_equal(transitions.rewards, expected.astype(np.float32))
    assert np.array_equal(transitions.terminals, expected)  # D4RL marks the goal's steps terminal
    # a success ends its path with its reward: the termination penalty is for falls
    paths = joined_paths(transitions, SequenceSpec())
    rewards = np.concatenate([p[:, -2] for p in paths])
    assert rewards.max() == 1.0 and rewards.min() == 0.0
    with pytest.raises(PipelineError, match="fixed-goal"):
        load_transitions(folder, ObservationSpec(task="offline-rl", observation_keys=["achieved_goal", "observation"]))


def test_walls_mirror_evaluation_runs_on_the_data_maze(root):
    folder = standin(root, "D4RL/antmaze/umaze-v1")
    dataset = minari.MinariDataset(folder / "data")
    collection = antmaze.walls(dataset.spec.env_spec.kwargs["maze_map"])
    minari_evaluation = dataset.recover_environment(eval_env=True)
    assert antmaze.walls(minari_evaluation.unwrapped.maze.maze_map) == [row[::-1] for row in collection] != collection
    spec = datasets.DatasetSpec(fetch=FetchSpec(source="minari", minari_id="D4RL/antmaze/umaze-v1"), observation=ANTMAZE_OBSERVATION)
    env = make_env(spec, folder)
    assert antmaze.walls(env.unwrapped.maze.maze_map) == collection
    obs, info = env.reset(seed=0)
    start = env_goal("AntMaze_UMaze-v4", collection, (3, 1))
    assert np.linalg.norm(obs["achieved_goal"] - start) <= 1.5 and not info["success"]  # D4RL's start, with the env's noise
    assert np.allclose(env.task.goal, env_goal("AntMaze_UMaze-v4", collection, (1, 1)))
    mirrored = antmaze.AntMazeTask(env.task.env_id, {**env.task.env_kwargs, "maze_map": minari_evaluation.unwrapped.maze.maze_map},
                                   collection, (3, 1), (1, 1))
    with pytest.raises(PipelineError, match="other walls than its data's"):
        mirrored.make_env()


def test_normalization_uses_d4rl_constants_whatever_the_dataset_records(root):
    expert = minari.MinariDataset(standin(root, "mujoco/hopper/expert-v0") / "data")
    assert expert.storage.metadata["ref_max_score"] == standins.STAND_IN_EXPERT_SCORES[1]
    assert reference_returns(expert) == (-20.272305, 3234.3, "D4RL hopper")
    antmaze_data = minari.MinariDataset(standin(root, "D4RL/antmaze/large-play-v1") / "data")
    assert reference_returns(antmaze_data) == (0.0, 1.0, "D4RL antmaze")


def test_local_root_is_used_without_contacting_a_server(root, tmp_path, monkeypatch):
    def no_network(dataset_id, *args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(minari, "download_dataset", no_network)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    spec = FetchSpec(source="minari", minari_id=["mujoco/hopper/medium-v0", "mujoco/hopper/expert-v0"])
    datasets.fetch(spec, "hopper-medium-expert", tmp_path / "out")
    combined = minari.MinariDataset(tmp_path / "out" / "data")
    assert combined.total_episodes == 2 * minari.MinariDataset(standin(root, "mujoco/hopper/medium-v0") / "data").total_episodes
    empty = tmp_path / "empty-root"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(empty))
    with pytest.raises(PipelineError, match=f"not in the local Minari root {empty}") as error:
        datasets.fetch(FetchSpec(source="minari", minari_id="mujoco/hopper/medium-v0"), "hopper-medium", tmp_path / "none")
    assert "\n" not in str(error.value) and not (tmp_path / "none").exists()
    # a copy that lost episodes is not what Minari's own metadata records
    partial = tmp_path / "partial-root"
    shutil.copytree(standin(root, "mujoco/hopper/medium-v0"), partial / "mujoco/hopper/medium-v0")
    metadata = partial / "mujoco/hopper/medium-v0/data/metadata.json"
    recorded = json.loads(metadata.read_text())
    metadata.write_text(json.dumps({**recorded, "total_steps": recorded["total_steps"] + 1}))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(partial))
    with pytest.raises(PipelineError, match="holds total_steps .* where its metadata records"):
        datasets.fetch(FetchSpec(source="minari", minari_id="mujoco/hopper/medium-v0"), "hopper-medium", tmp_path / "partial")


def test_midpoint_and_the_published_settings_hold_in_the_paper_suite(project):
    project.compose("paper")
    params = yaml.safe_load((project.path / "params.yaml").read_text())
    assert params["discretize"]["reconstruction"] == "midpoint"
    assert params["train"]["model"]["position_embedding"] == "learned"
    assert params["train"]["optim"]["lr_schedule"] == "published"
    assert params["plan"]["cached"] is False and params["plan"]["distinct_candidates"] is False
    assert params["imitation"]["mode"] == "beam"
    assert all(params["datasets"][d]["observation"]["task"] == "fixed-goal" for d in params["critic"]["datasets"])


PAPER_ROWS = ["halfcheetah-medium", "halfcheetah-medium-expert", "halfcheetah-expert", "hopper-medium",
              "hopper-medium-expert", "hopper-expert", "walker2d-medium", "walker2d-medium-expert", "walker2d-expert",
              "antmaze-umaze", "antmaze-medium-play", "antmaze-medium-diverse", "antmaze-large-play", "antmaze-large-diverse",
              "pointmaze-fourrooms", "minigrid-multiroom"]


def test_rehearsal_runs_the_whole_paper_suite_offline(project, root):
    """The paper suite's every stage, on stand-ins in a local Minari root, at miniature sizes."""
    project.env["MINARI_DATASETS_PATH"] = str(root)
    project.compose("rehearsal")
    ran = project.stages_run()
    kinds = {"fetch", "discretize", "train", "train-ablation", "analyze", "critic", "bc", "evaluate", "evaluate-imitation",
             "evaluate-tt-q", "evaluate-iql", "evaluate-bc", "report"}
    assert {stage.split("@")[0] for stage in ran} == kinds
    report = (project.path / "reports/results/results.md").read_text()
    for row in PAPER_ROWS:
        assert f"| {row} | " in report, row
    assert "token by token as published" in report
    assert report.count("(D4RL hopper)") == 3 and report.count("(D4RL antmaze)") == 5
    # the published settings reached the artifacts
    discretizer = json.loads((project.path / "data/discretized/antmaze-large-play/quantile/discretizer.json").read_text())
    assert discretizer["reconstruction"] == "midpoint"
    reward_dim = discretizer["layout"]["reward"]
    assert reward_dim in discretizer["categorical"]  # relabeled sparse rewards: 0 and 1 apart
    config = json.loads((project.path / "models/hopper-medium/quantile/seed-0/config.json").read_text())
    assert config["model_config"]["position_embedding"] == "learned"
    assert project.stages_run() == []
