"""Stage `discretize`: fit the per-dimension discretizer of one dataset."""

from pathlib import Path

import click
import numpy as np

from trajectory_transformer.artifacts import atomic_directory, verified_folder_hash, write_json
from trajectory_transformer.cli import stage_command
from trajectory_transformer.config import load_params, parse, section
from trajectory_transformer.datasets import DatasetSpec, load_transitions
from trajectory_transformer.discretization import DiscretizeSpec, Discretizer
from trajectory_transformer.trajectories import SequenceSpec, joined_paths


@click.command()
@click.option("--dataset", required=True, help="key of the dataset under `datasets` in params.yaml")
@click.option("--kind", type=click.Choice(["quantile", "uniform"]), required=True)
@click.option("--data", "data_dir", type=click.Path(path_type=Path), required=True)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True)
@stage_command
def main(dataset: str, kind: str, data_dir: Path, out_dir: Path) -> None:
    params = load_params()
    where = f"datasets.{dataset}"
    dataset_spec = parse(DatasetSpec, section(params, where), where)
    sequence = parse(SequenceSpec, section(params, "sequence"), "sequence")
    spec = parse(DiscretizeSpec, section(params, "discretize"), "discretize")
    dataset_sha256 = verified_folder_hash(data_dir, "dataset")
    transitions = load_transitions(data_dir, dataset_spec.observation, where)
    joined = np.concatenate(joined_paths(transitions, sequence))
    discretizer = Discretizer.fit(
        joined, kind, spec, transitions.observations.shape[1], transitions.actions.shape[1]
    )
    discretizer.dataset_sha256 = dataset_sha256
    with atomic_directory(out_dir) as scratch:
        digest = discretizer.save(scratch / "discretizer.json")
        write_json(scratch / "summary.json", {
            "dataset": dataset,
            "discretizer_sha256": digest,
            "transitions": int(len(joined)),
            "transition_dim": discretizer.transition_dim,
            "vocab_size": discretizer.vocab_size,
            "kind": discretizer.kind,
            "reconstruction": discretizer.reconstruction,
        })


if __name__ == "__main__":
    main()
