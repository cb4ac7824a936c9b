"""D4RL's AntMaze task (the paper's Table 2) on Minari's AntMaze data.

Minari's D4RL/antmaze/*-v1 data were collected with `continuing_task=True, reset_target=False`
(its generation script, scripts/antmaze/create_antmaze_dataset.py): every episode heads for a
goal of its own (drawn at each reset on the medium and large maps), its stored reward is the
env's sparse reward for that goal, and no step ever terminates. The observation holds neither
goal. D4RL's task instead rewards one fixed evaluation goal: reward 1 within 0.5 of it, where
the episode ends (d4rl/locomotion/goal_reaching_env.py: `reward = 1.0 if
np.linalg.norm(self.get_xy() - self.target_goal) <= 0.5`, and `done` when `eval`), and its
datasets mark those steps terminal. So rewards and terminals are relabeled here for the
evaluation goal, from `achieved_goal` of the next observation.

The evaluation maze is the data's maze: the script's evaluation map for UMaze is the mirror
image of its collection map (other walls), so we evaluate on the collection walls with D4RL's
fixed start and goal cells (the script's evaluation maps give the same cells for medium and
large: reset top-left, goal in D4RL's corner; for UMaze D4RL's start and goal are the
collection map's R and G cells).
"""

import itertools
from dataclasses import dataclass

import gymnasium as gym
import gymnasium_robotics
import numpy as np

from trajectory_transformer.errors import PipelineError

gym.register_envs(gymnasium_robotics)

GOAL_RADIUS = 0.5  # D4RL's AntMaze success distance (gymnasium-robotics' own is 0.45)
CELL_SIZE = 4.0  # AntMaze's maze_size_scaling

# (reset cell, goal cell) of D4RL's evaluation task, as (row, column) of the collection map
D4RL_CELLS = {"umaze": ((3, 1), (1, 1)), "medium": ((1, 1), (6, 6)), "large": ((1, 1), (7, 9))}


def maze_family(env_id: str) -> str | None:
    """'umaze', 'medium' or 'large' for an AntMaze env id (AntMaze_Medium_Diverse_GR-v4), else None."""
    if not env_id.startswith("AntMaze_"):
        return None
    name = env_id.removeprefix("AntMaze_").split("-")[0].split("_")[0].lower()
    return name if name in D4RL_CELLS else None


def walls(maze_map) -> list[list[int]]:
    """A maze map's walls alone (1 = wall): its reset/goal/combined cell marks dropped."""
    return [[1 if cell == 1 else 0 for cell in row] for row in maze_map]


def cell_xy(layout, cell) -> np.ndarray:
    """Centre of `cell` in gymnasium-robotics' maze coordinates (x right, y up, origin at the centre)."""
    rows, columns = len(layout), len(layout[0])
    return np.array([(cell[1] + 0.5) * CELL_SIZE - columns * CELL_SIZE / 2,
                     rows * CELL_SIZE / 2 - (cell[0] + 0.5) * CELL_SIZE])


@dataclass
class AntMazeTask:
    """The fixed-goal evaluation task on the walls of one dataset's collection env."""

    env_id: str
    env_kwargs: dict
    layout: list  # walls of the collection map
    reset_cell: tuple[int, int]
    goal_cell: tuple[int, int]

    @property
    def goal(self) -> np.ndarray:
        return cell_xy(self.layout, self.goal_cell)

    def rewards(self, next_achieved_goal: np.ndarray) -> np.ndarray:
        return (np.linalg.norm(np.asarray(next_achieved_goal) - self.goal, axis=-1) <= GOAL_RADIUS).astype(np.float32)

    def make_env(self) -> "AntMazeEvaluation":
        env = AntMazeEvaluation(self)
        built = walls(env.unwrapped.maze.maze_map)
        if built != self.layout:
            rows = [r for r, (ours, theirs) in enumerate(itertools.zip_longest(built, self.layout)) if ours != theirs]
            raise PipelineError(f"the evaluation maze of {self.env_id} has other walls than its data's (rows {rows} differ): "
                                "evaluate on the data's own maze")
        return env


def task_of(env_spec: gym.envs.registration.EnvSpec) -> AntMazeTask | None:
    """The D4RL task of a dataset's collection env (its Minari `env_spec`), or None if it is no AntMaze."""
    family = maze_family(env_spec.id)
    if family is None:
        return None
    kwargs = dict(env_spec.kwargs)
    if "maze_map" not in kwargs:
        raise PipelineError(f"the env spec of {env_spec.id} names no maze_map: is the dataset an AntMaze dataset of Minari?")
    maze_map = kwargs["maze_map"]
    reset_cell, goal_cell = D4RL_CELLS[family]
    kwargs.update(maze_map=walls(maze_map), continuing_task=True, reset_target=False)
    return AntMazeTask(env_spec.id, kwargs, walls(maze_map), reset_cell, goal_cell)


class AntMazeEvaluation(gym.Wrapper):
    """D4RL's AntMaze evaluation episode: start in the reset cell, reward 1 and the end of the
    episode within `GOAL_RADIUS` of the goal cell's centre (`info["success"]`); the env's own
    noise moves the start, as in D4RL."""

    def __init__(self, task: AntMazeTask):
        super().__init__(gym.make(task.env_id, **task.env_kwargs))
        self.task = task

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options={"reset_cell": np.array(self.task.reset_cell),
                                                       "goal_cell": np.array(self.task.goal_cell)})
        info["success"] = bool(self.task.rewards(obs["achieved_goal"]))
        return obs, info

    def step(self, action):
        obs, _, terminated, truncated, info = self.env.step(action)
        info["success"] = bool(self.task.rewards(obs["achieved_goal"]))
        return obs, float(info["success"]), terminated or info["success"], truncated, info
