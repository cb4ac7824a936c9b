"""Benchmark commands: figures printed as JSON, measured side by side in one run.

    tt-benchmark tokenize     # discretizer fit and tokenization throughput
"""

import json
import time

import click
import numpy as np

from trajectory_transformer.discretization import DiscretizeSpec, Discretizer


@click.group()
def main() -> None:
    """Speed figures for the pipeline's hot paths."""


@main.command()
@click.option("--transitions", default=1_000_000, show_default=True)
@click.option("--dims", default=25, show_default=True, help="transition_dim (halfcheetah and walker2d: 25)")
@click.option("--n-bins", default=100, show_default=True)
def tokenize(transitions: int, dims: int, n_bins: int) -> None:
    """Fit a quantile discretizer on TRANSITIONS x DIMS values, tokenize and decode them."""
    data = np.random.default_rng(0).normal(size=(transitions, dims))
    start = time.perf_counter()
    discretizer = Discretizer.fit(data, "quantile", DiscretizeSpec(n_bins=n_bins), observation_dim=dims - 3, action_dim=1)
    fitted = time.perf_counter()
    tokens = discretizer.tokenize(data)
    tokenized = time.perf_counter()
    discretizer.reconstruct(tokens)
    decoded = time.perf_counter()
    click.echo(json.dumps({
        "transitions": transitions,
        "dims": dims,
        "fit_seconds": round(fitted - start, 3),
        "tokenize_seconds": round(tokenized - fitted, 3),
        "reconstruct_seconds": round(decoded - tokenized, 3),
        "tokenize_transitions_per_second": round(transitions / (tokenized - fitted)),
    }, indent=2))


if __name__ == "__main__":
    main()
