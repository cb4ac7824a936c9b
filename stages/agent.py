"""Stages `critic` and `bc`: an offline RL agent for one dataset and seed, trained on the same
observations as the Trajectory Transformer. `critic` trains IQL (its Q and V guide TT+Q, its
actor is the IQL baseline); `bc` trains the behavior-cloning baseline."""

from pathlib import Path

import click

from trajectory_transformer.artifacts import verified_folder_hash
from trajectory_transformer.cli import stage_command
from trajectory_transformer.config import load_params, parse, section
from trajectory_transformer.critic import AgentIdentity, BCSpec, IQLSpec, train_agent
from trajectory_transformer.datasets import DatasetSpec, load_transitions


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
    identity = AgentIdentity(dataset=dataset, dataset_sha256=verified_folder_hash(data_dir, "dataset"), algorithm=algorithm, seed=seed)
    transitions = load_transitions(data_dir, dataset_spec.observation, where)
    train_agent(transitions, spec, identity, out_dir, report_dir, checkpoint)


if __name__ == "__main__":
    main()
