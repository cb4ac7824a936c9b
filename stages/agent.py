"""Stages `critic` and `bc`: an offline RL agent for one dataset and seed, trained on the same
observations as the Trajectory Transformer. `critic` trains IQL (its Q and V guide TT+Q, its
actor is the IQL baseline); `bc` trains the behavior-cloning baseline, goal-conditioned (and
map-conditioned) on a goal-reaching dataset, categorical on discrete actions."""

from pathlib import Path

import click
import gymnasium as gym

from trajectory_transformer.artifacts import verified_folder_hash
from trajectory_transformer.cli import stage_command
from trajectory_transformer.config import load_params, parse, section
from trajectory_transformer.critic import AgentIdentity, BCSpec, IQLSpec, train_agent
from trajectory_transformer.datasets import DatasetSpec, load_transitions, open_dataset
from trajectory_transformer.trajectories import SequenceSpec


@click.command()
@click.option("--algorithm", type=click.Choice(["iql", "bc"]), required=True, help="iql reads params `critic`, bc reads `bc`")
@click.option("--dataset", required=True, help="key of the dataset under `datasets` in params.yaml")
@click.option("--seed", type=int, required=True)
@click.option("--data", "data_dir", type=click.Path(path_type=Path), required=True)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="weights and config")
@click.option("--report", "report_dir", type=click.Path(path_type=Path), required=True, help="metrics and curves")
@click.option("--checkpoint", type=click.Path(path_type=Path), required=True, help="resume file, outside the output")
@stage_command
def main(algorithm: str, dataset: str, seed: int, data_dir: Path, out_dir: Path, report_dir: Path, checkpoint: Path) -> None:
    params = load_params()
    where = f"datasets.{dataset}"
    dataset_spec = parse(DatasetSpec, section(params, where), where)
    name = "critic" if algorithm == "iql" else "bc"
    spec = parse(IQLSpec if algorithm == "iql" else BCSpec, section(params, name), name)
    observation = dataset_spec.observation
    goal_reaching = observation.task == "goal-reaching"
    # where paths end decides a goal-conditioned BC's goals; read only then (the critic stage does not track it)
    max_path_length = parse(SequenceSpec, section(params, "sequence"), "sequence").max_path_length if goal_reaching else None
    identity = AgentIdentity(dataset=dataset, dataset_sha256=verified_folder_hash(data_dir, "dataset"), algorithm=algorithm, seed=seed,
                             goal_dims=list(observation.goal_dims) if goal_reaching else [],
                             max_path_length=max_path_length,
                             map_conditioned=observation.map_key is not None)
    transitions = load_transitions(data_dir, observation, where)
    action_space = open_dataset(data_dir).action_space
    action_choices = int(action_space.n) if isinstance(action_space, gym.spaces.Discrete) else 0
    train_agent(transitions, spec, identity, out_dir, report_dir, checkpoint, action_choices)


if __name__ == "__main__":
    main()
