"""Stage `train`: one Trajectory Transformer per dataset, discretizer kind and seed.

With `--ablation NAME` (stage `train-ablation`) the same training runs changed as
`analyze.ablations.NAME` says: a Markovian or a partially observed variant (paper section 4.1).

Multi-GPU or multi-node: launch this same command under `torchrun --nproc_per_node=N`.
"""

import dataclasses
from pathlib import Path

import click

from trajectory_transformer.artifacts import file_hash
from trajectory_transformer.cli import stage_command
from trajectory_transformer.config import load_params, parse, section
from trajectory_transformer.datasets import DatasetSpec
from trajectory_transformer.trajectories import SequenceSpec, path_goals, path_maps
from trajectory_transformer.training import AblationSpec, RunIdentity, TrainSpec, load_dataset, tokenize_paths, train


@click.command()
@click.option("--dataset", required=True, help="key of the dataset under `datasets` in params.yaml")
@click.option("--seed", type=int, required=True)
@click.option("--data", "data_dir", type=click.Path(path_type=Path), required=True)
@click.option("--discretizer", "discretizer_dir", type=click.Path(path_type=Path), required=True)
@click.option("--out", "model_dir", type=click.Path(path_type=Path), required=True, help="weights and config")
@click.option("--report", "report_dir", type=click.Path(path_type=Path), required=True, help="metrics and curves")
@click.option("--checkpoint", type=click.Path(path_type=Path), required=True, help="resume file, outside the output")
@click.option("--ablation", default=None, help="key under `analyze.ablations` in params.yaml")
@stage_command
def main(dataset: str, seed: int, data_dir: Path, discretizer_dir: Path, model_dir: Path, report_dir: Path, checkpoint: Path,
         ablation: str | None) -> None:
    params = load_params()
    where = f"datasets.{dataset}"
    dataset_spec = parse(DatasetSpec, section(params, where), where)
    shared = parse(SequenceSpec, section(params, "sequence"), "sequence")
    sequence = shared.with_window(dataset_spec.sequence.window)
    spec = parse(TrainSpec, section(params, "train"), "train")
    data = load_dataset(data_dir, discretizer_dir, dataset_spec.observation, sequence, where)
    transitions, discretizer, token_paths = data.transitions, data.discretizer, data.token_paths
    observed_dims = None
    if ablation is not None:
        change_where = f"analyze.ablations.{ablation}"
        change = parse(AblationSpec, section(params, change_where), change_where)
        sequence = change.sequence(sequence)
        if change.hidden_probability > 0:
            observed_dims = change.observed_dims(discretizer.observation_dim)
            transitions = dataclasses.replace(transitions, observations=transitions.observations[:, observed_dims])
            discretizer = discretizer.observing(observed_dims)
        token_paths = tokenize_paths(transitions, discretizer, sequence)
    # as many tokens per update as the suite's window gives, so that a model on shorter windows
    # (an ablation, or a dataset that sets its own) is not simply trained less
    spec.optim.batch_size = spec.optim.batch_size * shared.window // sequence.window
    identity = RunIdentity(
        dataset=dataset,
        dataset_sha256=data.sha256,
        discretizer_sha256=file_hash(discretizer_dir / "discretizer.json"),
        discretizer_kind=discretizer.kind,
        seed=seed,
        observed_dims=observed_dims,
        goal_dims=list(dataset_spec.observation.goal_dims or []) if dataset_spec.observation.task == "goal-reaching" else [],
    )
    goals = path_goals(transitions, sequence, identity.goal_dims) if identity.goal_dims else None
    train(token_paths, discretizer, sequence, spec, identity, model_dir, report_dir,
          checkpoint, path_goals=goals, path_maps=path_maps(transitions, sequence))


if __name__ == "__main__":
    main()
