"""Stand-ins for the paper suite's Minari datasets, made offline: the dress rehearsal's data.

Each stand-in has the Minari id, the environment id and version, the observation layout, the
per-episode goals, the episode structure and the metadata (evaluation env spec included) of the
real dataset (Minari's generation scripts, repository Farama-Foundation/minari-dataset-generation-scripts:
scripts/mujoco and scripts/antmaze/create_antmaze_dataset.py), but few, short episodes of random
actions: the rehearsal proves the pipeline, not the method. Written into a Minari root, they are
what `fetch` finds there on a machine without network.

- mujoco/{halfcheetah,hopper,walker2d}/{medium,expert}-v0: Gymnasium v5 envs; flat observations.
  The expert stand-ins carry reference scores in their metadata, as Minari's later dataset
  versions do (v0 has none), so that the rehearsal checks that D4RL's constants win.
- D4RL/antmaze/{umaze,medium-play,medium-diverse,large-play,large-diverse}-v1: AntMaze v4 with
  `continuing_task=True, reset_target=False`, the script's collection map (UMaze: its own map
  with fixed goal and reset cells) and its evaluation maps (UMaze's mirrored); the medium and
  large maps draw each episode's goal at reset, so stored rewards are for that goal. Every
  third episode starts in the evaluation goal cell, so relabeled rewards have ones to find.
"""

import copy
import warnings
from pathlib import Path

import click
import gymnasium as gym
import minari
import numpy as np
from tqdm import tqdm

from trajectory_transformer import antmaze
from trajectory_transformer.datasets import minari_root

LOCOMOTION = {"halfcheetah": "HalfCheetah-v5", "hopper": "Hopper-v5", "walker2d": "Walker2d-v5"}
ANTMAZE = {  # the generation script's DATASET_ID_TO_ENV_ID
    "umaze": "AntMaze_UMaze-v4", "medium-play": "AntMaze_Medium-v4", "medium-diverse": "AntMaze_Medium_Diverse_GR-v4",
    "large-play": "AntMaze_Large-v4", "large-diverse": "AntMaze_Large_Diverse_GR-v4",
}
G, R = "g", "r"
UMAZE_COLLECTION_MAP = [[1, 1, 1, 1, 1], [1, G, 0, 0, 1], [1, 1, 1, 0, 1], [1, R, 0, 0, 1], [1, 1, 1, 1, 1]]
EVALUATION_MAPS = {  # the script's EVAL_ENV_MAPS
    "umaze": [[1, 1, 1, 1, 1], [1, 0, 0, R, 1], [1, 0, 1, 1, 1], [1, 0, 0, G, 1], [1, 1, 1, 1, 1]],
    "medium": [[1, 1, 1, 1, 1, 1, 1, 1], [1, R, 0, 1, 1, 0, 0, 1], [1, 0, 0, 1, 0, 0, 0, 1], [1, 1, 0, 0, 0, 1, 1, 1],
               [1, 0, 0, 1, 0, 0, 0, 1], [1, 0, 1, 0, 0, 1, 0, 1], [1, 0, 0, 0, 1, 0, G, 1], [1, 1, 1, 1, 1, 1, 1, 1]],
    "large": [[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], [1, R, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1], [1, 0, 1, 1, 0, 1, 0, 1, 0, 1, 0, 1],
              [1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1], [1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 0, 1], [1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1],
              [1, 1, 0, 1, 0, 1, 0, 1, 0, 1, 1, 1], [1, 0, 0, 1, 0, 0, 0, 1, 0, G, 0, 1], [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]],
}
STAND_IN_EXPERT_SCORES = (0.0, 1000.0)  # deliberately not D4RL's


def make_standins(root: Path, episodes: int = 8, steps: int = 60, seed: int = 0) -> list[str]:
    """Write every stand-in into the Minari root `root`; returns their ids."""
    rng = np.random.default_rng(seed)
    ids = []
    with minari_root(root), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is set to None|.*out of date", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        for name, env_id in LOCOMOTION.items():
            for quality in ("medium", "expert"):
                dataset_id = f"mujoco/{name}/{quality}-v0"
                collector = minari.DataCollector(gym.make(env_id))
                collect(collector, rng, episodes, steps, options=lambda episode: None, desc=dataset_id)
                references = dict(zip(("ref_min_score", "ref_max_score"), STAND_IN_EXPERT_SCORES)) if quality == "expert" else {}
                create(collector, dataset_id, None, **references)
                ids.append(dataset_id)
        for name, env_id in ANTMAZE.items():
            dataset_id = f"D4RL/antmaze/{name}-v1"
            family = name.split("-")[0]
            layout = {"maze_map": UMAZE_COLLECTION_MAP} if name == "umaze" else {}
            env = gym.make(env_id, **layout, continuing_task=True, reset_target=False)
            evaluation = copy.deepcopy(env.spec)
            evaluation.kwargs["maze_map"] = EVALUATION_MAPS[family]
            goal_cell = np.array(antmaze.D4RL_CELLS[family][1])
            collector = minari.DataCollector(env)
            collect(collector, rng, episodes, steps, desc=dataset_id,
                    options=lambda episode: {"reset_cell": goal_cell} if episode % 3 == 0 else None)
            create(collector, dataset_id, evaluation)
            ids.append(dataset_id)
    return ids


def collect(collector, rng: np.random.Generator, episodes: int, steps: int, options, desc: str) -> None:
    """`episodes` episodes of uniform random actions, each cut after `steps` steps (Minari marks
    the cut a truncation) unless the env ends it first."""
    space = collector.action_space
    for episode in tqdm(range(episodes), desc=f"stand-in {desc}", unit="episode", mininterval=2):
        collector.reset(seed=int(rng.integers(2**31)), options=options(episode))
        for _ in range(steps):
            action = rng.uniform(space.low, space.high).astype(space.dtype)
            _, _, terminated, truncated, _ = collector.step(action)
            if terminated or truncated:
                break


def create(collector, dataset_id: str, eval_env, **references) -> None:
    collector.create_dataset(dataset_id=dataset_id, eval_env=eval_env, algorithm_name="stand-in: uniform random actions",
                             author="trajectory-transformer-pipeline", code_permalink="trajectory_transformer/standins.py",
                             **references)
    collector.close()


@click.command()
@click.argument("root", type=click.Path(path_type=Path))
def main(root: Path) -> None:
    """Write the paper suite's stand-in Minari datasets into the Minari root ROOT (then point
    MINARI_DATASETS_PATH at it)."""
    for dataset_id in make_standins(root):
        click.echo(dataset_id)


if __name__ == "__main__":
    main()
