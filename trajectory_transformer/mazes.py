"""PointMaze layouts, the published waypoint expert, and the fixed evaluation goal.

The expert follows REFERENCE.md section 7 (how the D4RL/Minari PointMaze data were made):
Q-iteration on the maze's cell grid picks the next cell to head for, a PD controller
`a = 10 (waypoint - position) - 1 velocity` follows waypoints at cell centres with a small
random offset (the exact goal last), Gaussian noise is added and actions are clipped.
"""

from dataclasses import dataclass

import gymnasium as gym
import gymnasium_robotics
import numpy as np

from trajectory_transformer.errors import PipelineError

gym.register_envs(gymnasium_robotics)

GOAL_RADIUS = 0.45  # PointMaze's own success distance

# 1 = wall, 0 = free. Same layouts as gymnasium_robotics.envs.maze.maps.
LAYOUTS = {
    "umaze": [
        [1, 1, 1, 1, 1],
        [1, 0, 0, 0, 1],
        [1, 1, 1, 0, 1],
        [1, 0, 0, 0, 1],
        [1, 1, 1, 1, 1],
    ],
    "medium": [
        [1, 1, 1, 1, 1, 1, 1, 1],
        [1, 0, 0, 1, 1, 0, 0, 1],
        [1, 0, 0, 1, 0, 0, 0, 1],
        [1, 1, 0, 0, 0, 1, 1, 1],
        [1, 0, 0, 1, 0, 0, 0, 1],
        [1, 0, 1, 0, 0, 1, 0, 1],
        [1, 0, 0, 0, 1, 0, 0, 1],
        [1, 1, 1, 1, 1, 1, 1, 1],
    ],
}

# The fixed evaluation task of each maze (D4RL maze2d style): start cell and goal cell.
EVALUATION_CELLS = {
    "umaze": {"reset_cell": (3, 1), "goal_cell": (1, 1)},
    "medium": {"reset_cell": (1, 1), "goal_cell": (6, 6)},
}

ENV_IDS = {"umaze": "PointMaze_UMaze-v3", "medium": "PointMaze_Medium-v3"}
EPISODE_STEPS = {"umaze": 300, "medium": 600}

PD_GAIN_POSITION = 10.0
PD_GAIN_VELOCITY = 1.0
WAYPOINT_OFFSET = 0.1  # uniform offset around cell centres, in cell-size units


def check_maze(maze: str) -> None:
    if maze not in LAYOUTS:
        raise PipelineError(f"unknown maze '{maze}': choose one of {sorted(LAYOUTS)}")


def make_env(maze: str, *, reset_target: bool, max_episode_steps: int | None = None) -> gym.Env:
    """The continuing gymnasium-robotics PointMaze env for a layout (sparse reward, as published)."""
    check_maze(maze)
    return gym.make(
        ENV_IDS[maze],
        continuing_task=True,
        reset_target=reset_target,
        max_episode_steps=max_episode_steps or EPISODE_STEPS[maze],
    )


def cell_center(maze_env, cell) -> np.ndarray:
    return np.asarray(maze_env.maze.cell_rowcol_to_xy(np.asarray(cell)), dtype=np.float64)


def evaluation_goal(maze: str) -> np.ndarray:
    """The exact evaluation goal: the centre of the evaluation goal cell."""
    return make_evaluation_env(maze).evaluation_goal


def goal_reached(achieved_goal: np.ndarray, goal: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.asarray(achieved_goal) - goal, axis=-1) <= GOAL_RADIUS


MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))


def free_neighbours(layout, cell):
    row, col = cell
    for dr, dc in MOVES:
        r, c = row + dr, col + dc
        if 0 <= r < len(layout) and 0 <= c < len(layout[0]) and layout[r][c] == 0:
            yield r, c


def q_iteration(layout, goal_cell, discount: float = 0.99, iterations: int = 50) -> np.ndarray:
    """Cell values after Q-iteration: reward 1 for being at the goal cell, 4 moves, walls blocked."""
    values = np.zeros((len(layout), len(layout[0])))
    free_cells = [(r, c) for r, row in enumerate(layout) for c, wall in enumerate(row) if wall == 0]
    for _ in range(iterations):
        updated = np.zeros_like(values)
        for cell in free_cells:
            reward = 1.0 if cell == tuple(goal_cell) else 0.0
            updated[cell] = reward + discount * max(values[n] for n in free_neighbours(layout, cell))
        values = updated
    return values


def next_cell(layout, values: np.ndarray, cell) -> tuple[int, int]:
    """The free neighbouring cell with the highest value."""
    return max(free_neighbours(layout, cell), key=lambda n: values[n])
@dataclass
class WaypointExpert:
    """The published waypoint controller for one PointMaze env (noise is added by the caller)."""

    maze_env: object  # the unwrapped PointMaze env
    layout: list
    rng: np.random.Generator

    def __post_init__(self):
        self._goal_key = None
        self._waypoint_cell = None
        self._waypoint = None

    def _values_for(self, goal: np.ndarray) -> tuple:
        goal_cell = tuple(int(v) for v in self.maze_env.maze.cell_xy_to_rowcol(goal))
        if self._goal_key != goal_cell:
            self._goal_key = goal_cell
            self._values = q_iteration(self.layout, goal_cell)
        return goal_cell, self._values

    def action(self, position: np.ndarray, velocity: np.ndarray, goal: np.ndarray) -> np.ndarray:
        goal_cell, values = self._values_for(goal)
        cell = tuple(int(v) for v in self.maze_env.maze.cell_xy_to_rowcol(position))
        if cell == goal_cell or self.layout[cell[0]][cell[1]] == 1:
            target = goal
        else:
            target_cell = next_cell(self.layout, values, cell)
            if target_cell == goal_cell:
                target = goal
            else:
                if target_cell != self._waypoint_cell:
                    scale = self.maze_env.maze.maze_size_scaling
                    offset = self.rng.uniform(-WAYPOINT_OFFSET, WAYPOINT_OFFSET, size=2) * scale
                    self._waypoint_cell = target_cell
                    self._waypoint = cell_center(self.maze_env, target_cell) + offset
                target = self._waypoint
        return PD_GAIN_POSITION * (target - position) - PD_GAIN_VELOCITY * velocity


class EvaluationTask(gym.Wrapper):
    """The fixed-goal evaluation task (D4RL maze2d style) on a continuing PointMaze env.

    Every episode starts in the evaluation reset cell and lasts the maze's full episode length;
    the reward is 1 for each step within the goal radius of the exact evaluation goal (the goal
    cell's centre), and `info["success"]` says whether the goal is reached at that step.
    """

    def __init__(self, maze: str):
        super().__init__(make_env(maze, reset_target=False))
        self.maze = maze
        self.evaluation_goal = cell_center(self.env.unwrapped, EVALUATION_CELLS[maze]["goal_cell"])

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=dict(EVALUATION_CELLS[self.maze]))
        info["success"] = bool(goal_reached(obs["achieved_goal"], self.evaluation_goal))
        return obs, info

    def step(self, action):
        obs, _, terminated, truncated, info = self.env.step(action)
        info["success"] = bool(goal_reached(obs["achieved_goal"], self.evaluation_goal))
        return obs, float(info["success"]), terminated, truncated, info


def make_evaluation_env(maze: str) -> EvaluationTask:
    check_maze(maze)
    return EvaluationTask(maze)
