"""Stage `evaluate`: run one trained model as a planner in its environment."""

import json
from pathlib import Path

import click
import torch

from trajectory_transformer.artifacts import atomic_directory, file_hash, folder_hash, write_json
from trajectory_transformer.cli import stage_command
from trajectory_transformer.config import load_params, parse, section
from trajectory_transformer.datasets import DatasetSpec
from trajectory_transformer.discretization import Discretizer
from trajectory_transformer.errors import PipelineError
from trajectory_transformer.evaluation import EvaluateSpec, evaluate, summarize
from trajectory_transformer.planner import PlannerSpec
from trajectory_transformer.training import load_model, resolve_device


@click.command()
@click.option("--dataset", required=True, help="key of the dataset under `datasets` in params.yaml")
@click.option("--seed", type=int, required=True, help="the trained model's seed")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), required=True)
@click.option("--discretizer", "discretizer_dir", type=click.Path(path_type=Path), required=True)
@click.option("--model", "model_dir", type=click.Path(path_type=Path), required=True)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True)
@click.option("--timing", type=click.Path(path_type=Path), required=True, help="wall times, kept out of DVC outputs")
@stage_command
def main(dataset: str, seed: int, data_dir: Path, discretizer_dir: Path, model_dir: Path, out_dir: Path, timing: Path) -> None:
    params = load_params()
    where = f"datasets.{dataset}"
    dataset_spec = parse(DatasetSpec, section(params, where), where)
    planner = parse(PlannerSpec, section(params, "plan"), "plan")
    spec = parse(EvaluateSpec, section(params, "evaluate"), "evaluate")
    device = resolve_device(spec.device)
    if device.type == "cpu":
        torch.set_num_threads(spec.cpu_threads)
    model, metadata = load_model(model_dir, device)
    discretizer = Discretizer.load(discretizer_dir / "discretizer.json")
    if metadata["discretizer_sha256"] != file_hash(discretizer_dir / "discretizer.json") or \
            metadata["dataset_sha256"] != folder_hash(data_dir):
        raise PipelineError(f"the model in {model_dir} was trained on another dataset or discretizer than "
                            f"{data_dir} and {discretizer_dir}: rerun its train stage (`dvc repro`)")
    records, times = evaluate(model, discretizer, dataset_spec, data_dir, planner, spec, seed, device)
    summary = summarize(records)
    with atomic_directory(out_dir) as scratch:
        write_json(scratch / "episodes.json", {"model_sha256": file_hash(model_dir / "model.safetensors"), "episodes": records})
        write_json(scratch / "metrics.json", summary)
    write_json(timing, times)
    click.echo(json.dumps(summary))


if __name__ == "__main__":
    main()
