"""MiniGrid MultiRoom as a tokenisable goal-reaching task, its shortest-path expert, and a path figure.

Paper appendix F trains on offline goal-reaching data in `MiniGrid-MultiRoom-N4-S5-v0` (a 25x25
grid of up to 4 small rooms joined by doors). MiniGrid's own observation is a partial egocentric
image plus a mission string; the Trajectory Transformer tokenises every step, so
`FullyObservedGrid` replaces it with a 4-number state (agent x, agent y, direction, and what is
in front: empty or an open door, wall, closed door, goal), the goal square (x, y) and a
per-episode map image of the static layout. The cell in front is the one local observation:
without it a small model must learn where every wall is from a global map embedding alone. The expert walks a breadth-first shortest path and
opens the doors on it. Training maps come from reset seeds at or above `TRAINING_SEEDS_START`,
evaluation maps from seeds below it, so no held-out map is ever trained on.
"""

from collections import deque
from pathlib import Path

import gymnasium as gym
import minigrid
import numpy as np
from minigrid.core.constants import DIR_TO_VEC
from minigrid.core.world_object import Door, Goal, Wall

from trajectory_transformer.errors import PipelineError

gym.register_envs(minigrid)

ENV_ID = "MiniGrid-MultiRoom-N4-S5-v0"

# MiniGrid actions left, right, forward, toggle: MultiRoom needs no pickup, drop or done.
ACTIONS = (0, 1, 2, 5)
TURN_LEFT, TURN_RIGHT, FORWARD, TOGGLE = range(len(ACTIONS))  # indices into ACTIONS

EMPTY, WALL, DOOR, GOAL = 0, 1, 2, 3  # map codes

# Evaluation resets with seeds `evaluate_seed * 10_000 + episode`, all below this.
TRAINING_SEEDS_START = 1_000_000


def static_map(grid) -> np.ndarray:
    """The layout as map[y, x] codes; doors are DOOR whether open or not, so the map is per-episode."""
    layout = np.full((grid.height, grid.width), EMPTY, dtype=np.uint8)
    for x in range(grid.width):
        for y in range(grid.height):
            cell = grid.get(x, y)
            if isinstance(cell, Wall):
                layout[y, x] = WALL
            elif isinstance(cell, Door):
                layout[y, x] = DOOR
            elif isinstance(cell, Goal):
                layout[y, x] = GOAL
    return layout


def front_code(cell) -> int:
    """What the agent faces, as a map code; an open door is passable, so it reads as EMPTY."""
    if isinstance(cell, Door):
        return EMPTY if cell.is_open else DOOR
    return WALL if isinstance(cell, Wall) else GOAL if isinstance(cell, Goal) else EMPTY


class FullyObservedGrid(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """A MiniGrid env observed as {"state": [x, y, direction, front], "goal": [x, y], "map": static layout map[y, x]}.

    Actions are indices into ACTIONS; the reward is MiniGrid's, and `info["success"]` says whether
    the episode ended on the goal.
    """

    def __init__(self, env: gym.Env):
        gym.utils.RecordConstructorArgs.__init__(self)  # so Minari can record and remake the env from its spec
        gym.Wrapper.__init__(self, env)
        width, height = env.unwrapped.width, env.unwrapped.height
        self.action_space = gym.spaces.Discrete(len(ACTIONS))
        self.observation_space = gym.spaces.Dict({
            "state": gym.spaces.Box(low=0, high=np.array([width - 1, height - 1, 3, GOAL]), shape=(4,), dtype=np.int64),
            "goal": gym.spaces.Box(low=0, high=np.array([width - 1, height - 1]), shape=(2,), dtype=np.int64),
            "map": gym.spaces.Box(low=EMPTY, high=GOAL, shape=(height, width), dtype=np.uint8),
        })
        self.map = None
        self.goal_position = None

    def _observation(self) -> dict:
        minigrid_env = self.env.unwrapped
        x, y = minigrid_env.agent_pos
        state = np.array([x, y, minigrid_env.agent_dir, front_code(minigrid_env.grid.get(*minigrid_env.front_pos))], dtype=np.int64)
        # A copy, so a caller that edits one step's map cannot change the next step's.
        return {"state": state, "goal": np.array(self.goal_position, dtype=np.int64), "map": self.map.copy()}

    def reset(self, *, seed=None, options=None):
        _, info = self.env.reset(seed=seed, options=options)
        self.map = static_map(self.env.unwrapped.grid)
        (goal_y,), (goal_x,) = np.nonzero(self.map == GOAL)
        self.goal_position = (int(goal_x), int(goal_y))
        info["success"] = False
        return self._observation(), info

    def step(self, action):
        _, reward, terminated, truncated, info = self.env.step(ACTIONS[int(action)])
        info["success"] = bool(terminated and reward > 0)
        return self._observation(), reward, terminated, truncated, info


def make_env(max_episode_steps: int | None = None) -> FullyObservedGrid:
    """MultiRoom fully observed; MiniGrid's own step limit unless `max_episode_steps` is given."""
    limit = {} if max_episode_steps is None else {"max_steps": max_episode_steps}
    return FullyObservedGrid(gym.make(ENV_ID, **limit))


class ShortestPathExpert:
    """Turns towards, opens, and walks to the next cell of a breadth-first shortest path to the goal.

    The path is searched afresh every step from the live grid, so nothing goes stale as doors open.
    """

    def next_cell(self, grid, start: tuple[int, int], goal: tuple[int, int]) -> tuple[int, int]:
        """The first cell after `start` on a shortest path to `goal`; walls block, doors do not."""
        parents = {start: None}
        frontier = deque([start])
        while frontier:
            cell = frontier.popleft()
            if cell == goal:
                while parents[cell] != start:
                    cell = parents[cell]
                return cell
            for dx, dy in DIR_TO_VEC:
                neighbour = (cell[0] + int(dx), cell[1] + int(dy))
                inside = 0 <= neighbour[0] < grid.width and 0 <= neighbour[1] < grid.height
                if inside and neighbour not in parents and not isinstance(grid.get(*neighbour), Wall):
                    parents[neighbour] = cell
                    frontier.append(neighbour)
        raise PipelineError(f"no path from {start} to the goal at {goal}")

    def action(self, env: FullyObservedGrid) -> int:
        minigrid_env = env.unwrapped
        position = tuple(int(v) for v in minigrid_env.agent_pos)
        target = self.next_cell(minigrid_env.grid, position, env.goal_position)
        step = (target[0] - position[0], target[1] - position[1])
        wanted_direction = next(d for d, vec in enumerate(DIR_TO_VEC) if tuple(int(v) for v in vec) == step)
        # MiniGrid's right turn adds 1 to the direction, left subtracts 1; about-turns go right.
        turns_right = (wanted_direction - minigrid_env.agent_dir) % 4
        if turns_right == 3:
            return TURN_LEFT
        if turns_right in (1, 2):
            return TURN_RIGHT
        in_front = minigrid_env.grid.get(*target)
        if isinstance(in_front, Door) and not in_front.is_open:
            return TOGGLE
        return FORWARD


def training_seeds(seed: int, episodes: int) -> list[int]:
    """`episodes` distinct reset seeds in [TRAINING_SEEDS_START, 2**31), determined by `seed`."""
    rng = np.random.default_rng(seed)
    offsets = rng.choice(2**31 - TRAINING_SEEDS_START, size=episodes, replace=False)
    return [TRAINING_SEEDS_START + int(offset) for offset in offsets]


def is_held_out(reset_seed: int) -> bool:
    return reset_seed < TRAINING_SEEDS_START


MAP_COLOURS = {EMPTY: "white", WALL: "#303030", DOOR: "#8b5a2b", GOAL: "#2ca02c"}


def draw_paths(maps: list[np.ndarray], paths: list[np.ndarray], successes: list[bool], out: Path,
               columns: int = 3) -> None:
    """A PNG of up to `columns * 2` episodes: the map, the path darkening with time, and the start."""
    import matplotlib  # noqa: PLC0415 (only drawing needs it)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.collections import LineCollection  # noqa: PLC0415
    from matplotlib.colors import ListedColormap  # noqa: PLC0415
    from matplotlib.patches import Patch  # noqa: PLC0415

    episodes = list(zip(maps, paths, successes))[: columns * 2]
    rows = max(1, -(-len(episodes) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3 * rows + 0.5), squeeze=False)
    map_colours = ListedColormap([MAP_COLOURS[code] for code in (EMPTY, WALL, DOOR, GOAL)])
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, (layout, path, success) in zip(axes.flat, episodes):
        # imshow centres pixel map[y, x] on (x, y), so path cells plot at their own coordinates.
        ax.imshow(layout, cmap=map_colours, vmin=EMPTY, vmax=GOAL, interpolation="nearest")
        path = np.asarray(path, dtype=np.float64)
        segments = np.stack([path[:-1], path[1:]], axis=1)
        # Light to saturated red over the episode; starting above 0.3 keeps early steps visible on white.
        colours = plt.get_cmap("Reds")(np.linspace(0.3, 1.0, len(segments)))
        ax.add_collection(LineCollection(segments, colors=colours, linewidths=2))
        ax.plot(path[0, 0], path[0, 1], "o", color="tab:blue", markersize=6)
        ax.set_title("reached" if success else "not reached")
    handles = [Patch(color=MAP_COLOURS[WALL], label="wall"), Patch(color=MAP_COLOURS[DOOR], label="door"),
               Patch(color=MAP_COLOURS[GOAL], label="goal"),
               plt.Line2D([], [], marker="o", linestyle="", color="tab:blue", label="start"),
               plt.Line2D([], [], color="darkred", label="path (darker = later)")]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize="small")
    fig.savefig(out, dpi=100, metadata={"Software": None})
    plt.close(fig)
