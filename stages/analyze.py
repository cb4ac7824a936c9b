"""Stage `analyze`: paper section 4.1 for one dataset, discretizer kind and seed.

Compounding error (Figure 3) of the trained model, its Markovian and partially observed
ablations (stage `train-ablation`) and a PETS-style feed-forward ensemble; attention maps of the
trained model (Figure 4); a rendered true and predicted trajectory where MuJoCo renders offline
(Figure 2).
"""

import csv
import json
from pathlib import Path

import click
import numpy as np
import torch

from trajectory_transformer.analysis import (
    ORACLE, AnalyzeSpec, Curve, attention_maps, draw_attention, draw_compounding_error, feed_forward_curve, fit_feed_forward,
    held_out_paths, oracle_curve, transformer_curve,
)
from trajectory_transformer.artifacts import atomic_directory, verified_folder_hash, write_json
from trajectory_transformer.cli import stage_command
from trajectory_transformer.config import load_params, parse, section
from trajectory_transformer.datasets import DatasetSpec, load_transitions, open_dataset
from trajectory_transformer.discretization import Discretizer
from trajectory_transformer.errors import PipelineError
from trajectory_transformer.rendering import SUPPORTED, offline_gl_backend, render_filmstrip
from trajectory_transformer.trajectories import SequenceSpec, joined_paths
from trajectory_transformer.training import TrainSpec, check_model_inputs, load_model, validation_split
from trajectory_transformer.weights import resolve_device

FULLY_OBSERVED, PARTIALLY_OBSERVED = "fully observed", "partially observed"
RENDERED_FRAMES = 6


def observed_columns(paths: list[np.ndarray], observation_dim: int, observed_dims: list[int] | None) -> list[np.ndarray]:
    """Paths as a partially observed model sees them: only its observation dims, then the rest."""
    if observed_dims is None:
        return paths
    columns = list(observed_dims) + list(range(observation_dim, paths[0].shape[1]))
    return [p[:, columns] for p in paths]


def curve_metrics(curve: Curve) -> dict:
    values = curve.log_density
    return {"first_step": round(float(values[0]), 3), "last_step": round(float(values[-1]), 3), "mean": round(float(values.mean()), 3)}


@click.command()
@click.option("--dataset", required=True, help="key of the dataset under `datasets` in params.yaml")
@click.option("--seed", type=int, required=True, help="the trained models' seed")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), required=True)
@click.option("--discretizer", "discretizer_dir", type=click.Path(path_type=Path), required=True)
@click.option("--model", "model_dir", type=click.Path(path_type=Path), required=True, help="the trained Trajectory Transformer")
@click.option("--markovian", type=click.Path(path_type=Path), required=True, help="its Markovian ablation")
@click.option("--partially-observed", type=click.Path(path_type=Path), required=True, help="its partially observed ablation")
@click.option("--partially-observed-markovian", type=click.Path(path_type=Path), required=True, help="both at once")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="figures, curves, attention maps")
@click.option("--metrics", "metrics_path", type=click.Path(path_type=Path), required=True, help="summary for dvc metrics / exp show")
@stage_command
def main(dataset: str, seed: int, data_dir: Path, discretizer_dir: Path, model_dir: Path, markovian: Path,
         partially_observed: Path, partially_observed_markovian: Path, out_dir: Path, metrics_path: Path) -> None:
    params = load_params()
    where = f"datasets.{dataset}"
    dataset_spec = parse(DatasetSpec, section(params, where), where)
    sequence = parse(SequenceSpec, section(params, "sequence"), "sequence").with_window(dataset_spec.sequence.window)
    train_spec = parse(TrainSpec, section(params, "train"), "train")
    spec = parse(AnalyzeSpec, section(params, "analyze"), "analyze")
    device = resolve_device(spec.device)
    if device.type == "cpu":
        torch.set_num_threads(spec.cpu_threads)
    discretizer = Discretizer.load(discretizer_dir / "discretizer.json")
    dataset_sha256 = verified_folder_hash(data_dir, "dataset")
    paths = joined_paths(load_transitions(data_dir, dataset_spec.observation, where), sequence)
    training, validation = validation_split(len(paths), train_spec.run.validation_fraction)
    starts = held_out_paths(paths, validation, spec.starts, spec.horizon)
    N, M = discretizer.observation_dim, discretizer.action_dim

    panels: dict[str, dict[str, Curve]] = {FULLY_OBSERVED: {}, PARTIALLY_OBSERVED: {}}
    partial_view = None
    first_model = None
    for name, folder, panel in (("Trajectory Transformer", model_dir, FULLY_OBSERVED), ("Markovian", markovian, FULLY_OBSERVED),
                                ("Trajectory Transformer", partially_observed, PARTIALLY_OBSERVED),
                                ("Markovian", partially_observed_markovian, PARTIALLY_OBSERVED)):
        model, metadata = load_model(folder, device)
        check_model_inputs(metadata, folder, discretizer_dir, (data_dir, dataset_sha256))
        observed = metadata.get("observed_dims")
        if (observed is None) != (panel == FULLY_OBSERVED) or (panel == PARTIALLY_OBSERVED and partial_view not in (None, observed)):
            raise PipelineError(f"{folder} is not the {panel} model this stage expects (observed dims {observed}): "
                                "check the analyze.ablations params and rerun `dvc repro`")
        if panel == PARTIALLY_OBSERVED:
            partial_view = observed
        first_model = first_model or model
        view = discretizer.observing(observed) if observed is not None else discretizer
        click.echo(f"{panel}: {name} ({folder})")
        crop = model.config.window < sequence.window  # an ablation trained on shorter windows never sees further back
        panels[panel][name] = transformer_curve(model, view, observed_columns(starts, N, observed), spec, device, crop)

    for panel, observed in ((FULLY_OBSERVED, None), (PARTIALLY_OBSERVED, partial_view)):
        view = discretizer.observing(observed) if observed is not None else discretizer
        panel_starts = observed_columns(starts, N, observed)
        click.echo(f"{panel}: feed-forward ensemble")
        ensemble = fit_feed_forward(observed_columns([paths[i] for i in training], N, observed), view.observation_dim, M,
                                    spec.ensemble, spec.seed, device)
        panels[panel]["Gaussian ensemble (PETS)"] = feed_forward_curve(ensemble, panel_starts, view.observation_dim, spec, device)
        panels[panel][ORACLE] = oracle_curve(view, panel_starts, spec.horizon)

    config = first_model.config
    window = discretizer.tokenize(starts[0][: config.window])[None].reshape(1, -1)[:, : config.block_size]
    maps = attention_maps(first_model, torch.as_tensor(window, device=device))

    env_spec = open_dataset(data_dir).env_spec
    backend, why_not = offline_gl_backend()
    with atomic_directory(out_dir) as scratch:
        draw_compounding_error(panels, scratch / "compounding-error.png")
        draw_attention(maps, config.transition_dim, scratch / "attention")
        with open(scratch / "curves.csv", "w", newline="") as f:
            writer = csv.writer(f)
            columns = [(panel, name) for panel, curves in panels.items() for name in curves]
            writer.writerow(["step"] + [f"{panel}: {name}" for panel, name in columns])
            for step in range(spec.horizon):
                writer.writerow([step + 1] + [f"{panels[panel][name].log_density[step]:.4f}" for panel, name in columns])
        metrics = {panel: {name: curve_metrics(curve) for name, curve in curves.items()} for panel, curves in panels.items()}
        metrics["outside_bins"] = round(panels[FULLY_OBSERVED]["Trajectory Transformer"].outside_bins, 4)
        metrics["hidden_dims"] = sorted(set(range(N)) - set(partial_view or range(N)))
        if backend is None or env_spec is None or env_spec.id not in SUPPORTED:
            reason = why_not if backend is None else f"{env_spec.id if env_spec else 'this dataset'} has no renderer here"
            click.echo(f"note: no rendered trajectory (Figure 2): {reason}")
        else:
            full = panels[FULLY_OBSERVED]
            rows = {"true": starts[0][: spec.horizon + 1, :N]}
            for name in ("Trajectory Transformer", "Gaussian ensemble (PETS)"):
                rows[name] = np.concatenate([starts[0][:1, :N], full[name].prediction[0]])
            frames = np.linspace(0, spec.horizon, RENDERED_FRAMES).round().astype(int).tolist()
            render_filmstrip(backend, env_spec.id, rows, frames, scratch / "prediction.png")
    write_json(metrics_path, metrics)
    click.echo(json.dumps(metrics))


if __name__ == "__main__":
    main()
