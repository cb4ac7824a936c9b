"""Stage `train`: one Trajectory Transformer per dataset, discretizer kind and seed.

Multi-GPU or multi-node: launch this same command under `torchrun --nproc_per_node=N`.
"""

from pathlib import Path

import click

from trajectory_transformer.artifacts import file_hash, folder_hash
from trajectory_transformer.cli import stage_command
from trajectory_transformer.config import load_params, parse, section
from trajectory_transformer.datasets import DatasetSpec, load_transitions
from trajectory_transformer.discretization import Discretizer
from trajectory_transformer.errors import PipelineError
from trajectory_transformer.trajectories import SequenceSpec
from trajectory_transformer.training import RunIdentity, TrainSpec, tokenize_paths, train


@click.command()
@click.option("--dataset", required=True, help="key of the dataset under `datasets` in params.yaml")
@click.option("--seed", type=int, required=True)
@click.option("--data", "data_dir", type=click.Path(path_type=Path), required=True)
@click.option("--discretizer", "discretizer_dir", type=click.Path(path_type=Path), required=True)
@click.option("--out", "model_dir", type=click.Path(path_type=Path), required=True, help="weights and config")
@click.option("--report", "report_dir", type=click.Path(path_type=Path), required=True, help="metrics and curves")
@click.option("--checkpoint", type=click.Path(path_type=Path), required=True, help="resume file, outside the output")
@stage_command
def main(dataset: str, seed: int, data_dir: Path, discretizer_dir: Path, model_dir: Path, report_dir: Path, checkpoint: Path) -> None:
    params = load_params()
    where = f"datasets.{dataset}"
    dataset_spec = parse(DatasetSpec, section(params, where), where)
    sequence = parse(SequenceSpec, section(params, "sequence"), "sequence")
    spec = parse(TrainSpec, section(params, "train"), "train")
    discretizer = Discretizer.load(discretizer_dir / "discretizer.json")
    dataset_sha256 = folder_hash(data_dir)
    if discretizer.dataset_sha256 != dataset_sha256:
        raise PipelineError(f"the discretizer in {discretizer_dir} was fitted on other data than {data_dir}: "
                            f"rerun `dvc repro discretize@{dataset}-{discretizer.kind}`")
    transitions = load_transitions(data_dir, dataset_spec.observation, where)
    identity = RunIdentity(
        dataset=dataset,
        dataset_sha256=dataset_sha256,
        discretizer_sha256=file_hash(discretizer_dir / "discretizer.json"),
        discretizer_kind=discretizer.kind,
        seed=seed,
    )
    train(tokenize_paths(transitions, discretizer, sequence), discretizer, sequence, spec, identity, model_dir, report_dir, checkpoint)


if __name__ == "__main__":
    main()
