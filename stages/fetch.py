"""Stage `fetch`: download or generate one dataset of the active suite."""

from pathlib import Path

import click

from trajectory_transformer.artifacts import write_json
from trajectory_transformer.cli import stage_command
from trajectory_transformer.config import load_params, parse, section
from trajectory_transformer.datasets import DatasetSpec, fetch, summary


@click.command()
@click.option("--dataset", required=True, help="key of the dataset under `datasets` in params.yaml")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True)
@click.option("--metrics", type=click.Path(path_type=Path), required=True)
@stage_command
def main(dataset: str, out_dir: Path, metrics: Path) -> None:
    where = f"datasets.{dataset}"
    spec = parse(DatasetSpec, section(load_params(), where), where)
    spec.fetch.check(f"{where}.fetch")
    fetch(spec.fetch, dataset, out_dir)
    write_json(metrics, summary(out_dir))


if __name__ == "__main__":
    main()
