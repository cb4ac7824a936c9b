"""PointMaze layouts, the published waypoint expert, and the evaluation tasks.

The expert follows how the D4RL/Minari PointMaze data were made (docs/published-system.md §7):
Q-iteration on the maze's cell grid picks the next cell to head for, a PD controller
`a = 10 (waypoint - position) - 1 velocity` follows waypoints at cell centres with a small
random offset (the exact goal last), Gaussian noise is added and actions are clipped.

Two evaluation tasks: the fixed goal of D4RL's maze2d (`EvaluationTask`), and goal reaching
in the four-rooms map of the paper's Figure 6 (`GoalReachingTask`): start and goal cells drawn
from a fixed set of held-out pairs that the training data never use.
"""

from dataclasses import dataclass
from pathlib import Path

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
    "large": [
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
        [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1],
        [1, 0, 1, 1, 0, 1, 0, 1, 0, 1, 0, 1],
        [1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1],
        [1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 0, 1],
        [1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1],
        [1, 1, 0, 1, 0, 1, 0, 1, 0, 1, 1, 1],
        [1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1],
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
    ],
    # four 3 x 3 rooms joined by one-cell doorways (the paper's Figure 6 map, scaled down)
    "fourrooms": [
        [1, 1, 1, 1, 1, 1, 1, 1, 1],
        [1, 0, 0, 0, 1, 0, 0, 0, 1],
        [1, 0, 0, 0, 0, 0, 0, 0, 1],
        [1, 0, 0, 0, 1, 0, 0, 0, 1],
        [1, 1, 0, 1, 1, 1, 0, 1, 1],
        [1, 0, 0, 0, 1, 0, 0, 0, 1],
        [1, 0, 0, 0, 0, 0, 0, 0, 1],
        [1, 0, 0, 0, 1, 0, 0, 0, 1],
        [1, 1, 1, 1, 1, 1, 1, 1, 1],
    ],
}
GOAL_REACHING_MAZES = ("fourrooms",)

# The fixed evaluation task of each maze (D4RL maze2d style): start cell and goal cell (D4RL's
# maze2d targets: medium (6, 6), large (7, 9)).
EVALUATION_CELLS = {
    "umaze": {"reset_cell": (3, 1), "goal_cell": (1, 1)},
    "medium": {"reset_cell": (1, 1), "goal_cell": (6, 6)},
    "large": {"reset_cell": (1, 1), "goal_cell": (7, 9)},
}

# gymnasium-robotics takes a custom layout through `maze_map`; it has no id of its own
ENV_IDS = {"umaze": "PointMaze_UMaze-v3", "medium": "PointMaze_Medium-v3", "large": "PointMaze_Large-v3",
           "fourrooms": "PointMaze_UMaze-v3"}
EPISODE_STEPS = {"umaze": 300, "medium": 600, "large": 800, "fourrooms": 400}
HELD_OUT_PAIRS = 100  # (start, goal) cell pairs kept for evaluation, of the 1,560 in four rooms
HELD_OUT_SEED = 0

PD_GAIN_POSITION = 10.0
PD_GAIN_VELOCITY = 1.0
WAYPOINT_OFFSET = 0.1  # uniform offset around cell centres, in cell-size units


def check_maze(maze: str) -> None:
    if maze not in LAYOUTS:
        raise PipelineError(f"unknown maze '{maze}': choose one of {sorted(LAYOUTS)}")


def make_env(maze: str, *, reset_target: bool, max_episode_steps: int | None = None, continuing: bool = True) -> gym.Env:
    """The gymnasium-robotics PointMaze env for a layout (sparse reward, as published); continuing
    by default, else an episode ends when the goal is reached."""
    check_maze(maze)
    layout = {"maze_map": LAYOUTS[maze]} if maze in GOAL_REACHING_MAZES else {}  # the others are registered ids
    return gym.make(
        ENV_IDS[maze],
        **layout,
        continuing_task=continuing,
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


def free_cells(layout) -> list[tuple[int, int]]:
    return [(r, c) for r, row in enumerate(layout) for c, wall in enumerate(row) if wall == 0]


def start_goal_pairs(maze: str) -> tuple[list, list]:
    """(training, held-out) ordered (start cell, goal cell) pairs of distinct free cells: a fixed
    random `HELD_OUT_PAIRS` of them are kept for evaluation and never generated as data."""
    cells = free_cells(LAYOUTS[maze])
    pairs = [(start, goal) for start in cells for goal in cells if start != goal]
    order = np.random.default_rng(HELD_OUT_SEED).permutation(len(pairs))
    held_out = set(int(i) for i in order[:HELD_OUT_PAIRS])
    return [p for i, p in enumerate(pairs) if i not in held_out], [pairs[int(i)] for i in order[:HELD_OUT_PAIRS]]


def free_neighbours(layout, cell):
    row, col = cell
    for dr, dc in MOVES:
        r, c = row + dr, col + dc
        if 0 <= r < len(layout) and 0 <= c < len(layout[0]) and layout[r][c] == 0:
            yield r, c


def q_iteration(layout, goal_cell, discount: float = 0.99, iterations: int = 50) -> np.ndarray:
    """Cell values after Q-iteration: reward 1 for being at the goal cell, 4 moves, walls blocked."""
    values = np.zeros((len(layout), len(layout[0])))
    for _ in range(iterations):
        updated = np.zeros_like(values)
        for cell in free_cells(layout):
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


def make_evaluation_env(maze: str) -> gym.Env:
    check_maze(maze)
    return GoalReachingTask(maze) if maze in GOAL_REACHING_MAZES else EvaluationTask(maze)


class GoalReachingTask(gym.Wrapper):
    """Goal reaching over held-out pairs: the episode reset with seed s starts in the start cell
    of held-out pair s mod `HELD_OUT_PAIRS` and must reach its goal cell (the env adds its small
    uniform noise to both); reaching it ends the episode with reward 1 and `info["success"]`."""

    def __init__(self, maze: str):
        super().__init__(make_env(maze, reset_target=False, continuing=False))
        self.maze = maze
        self.pairs = start_goal_pairs(maze)[1]

    def reset(self, *, seed=None, options=None):
        start, goal = self.pairs[(seed or 0) % len(self.pairs)]
        return self.env.reset(seed=seed, options={"reset_cell": start, "goal_cell": goal})


def draw_paths(maze: str, episodes: list[dict], out: Path, columns: int = 5) -> None:
    """Figure 6: one panel per episode, the executed path coloured from light to dark with time,
    the start a circle, the goal a star (with the goal radius), walls grey. `episodes` hold
    `path` ([x, y] per step), `goal` ([x, y]) and `success`."""
    import matplotlib  # noqa: PLC0415 (plotting only where a figure is drawn)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.collections import LineCollection  # noqa: PLC0415

    maze_env = make_env(maze, reset_target=False).unwrapped.maze
    layout, scale = LAYOUTS[maze], maze_env.maze_size_scaling
    rows = (len(episodes) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, episode in zip(axes.flat, episodes):
        for r, row in enumerate(layout):
            for c, wall in enumerate(row):
                if wall:
                    x, y = maze_env.cell_rowcol_to_xy(np.array([r, c]))
                    ax.add_patch(plt.Rectangle((x - scale / 2, y - scale / 2), scale, scale, color="0.35"))
        path = np.asarray(episode["path"], dtype=float)
        segments = np.stack([path[:-1], path[1:]], axis=1)
        lines = LineCollection(segments, cmap="Blues", norm=plt.Normalize(-0.3 * len(path), len(path)), linewidth=1.5)
        lines.set_array(np.arange(len(segments)))
        ax.add_collection(lines)
        ax.plot(*path[0], "o", color="tab:orange", markersize=6)
        ax.add_patch(plt.Circle(episode["goal"], GOAL_RADIUS, color="tab:green", alpha=0.25))
        ax.plot(*episode["goal"], "*", color="tab:green", markersize=11)
        ax.set_xlim(-len(layout[0]) * scale / 2, len(layout[0]) * scale / 2)
        ax.set_ylim(-len(layout) * scale / 2, len(layout) * scale / 2)
        ax.set_aspect("equal")
        ax.set_title("reached" if episode["success"] else "not reached", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=100, metadata={"Software": None})
    plt.close(fig)
