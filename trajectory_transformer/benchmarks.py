"""Benchmark commands: figures printed as JSON, measured side by side in one run.

    tt-benchmark tokenize     # discretizer fit and tokenization throughput
    tt-benchmark train-step   # training steps, variant by variant (precision, compile, threads)
    tt-benchmark plan         # one planning call: the published algorithm vs ours, cached and batched
"""

import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import click
import numpy as np
import torch

from trajectory_transformer import model as model_module
from trajectory_transformer.discretization import DiscretizeSpec, Discretizer
from trajectory_transformer.model import (
    ModelConfig, TrajectoryTransformer, target_groups, token_losses, weighted_loss,
)


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



def use_explicit_attention(model: TrajectoryTransformer) -> None:
    """The textbook attention in every block (scores, mask, softmax, weighted sum), as the published code computes it."""
    for block in model.blocks:
        block.attn.explicit = True


SIZES = {  # (model, batch): the published hopper model, and the offline suite's on Reacher's data
    "hopper": (ModelConfig(observation_dim=11, action_dim=3, n_bins=100, window=10, position_embedding="learned"), 256),
    "offline": (ModelConfig(observation_dim=10, action_dim=2, n_bins=100, window=10, n_layer=3, n_head=4, n_embd=96,
                            position_embedding="rotary"), 64),
}
VARIANTS = {
    "ours": "fused SDPA (training on a CPU: explicit, with word-drawn dropout masks) and (CUDA) fused AdamW with bf16 autocast",
    "torch-dropout": "ours with PyTorch's CPU dropout (one Mersenne-Twister draw per element) and its SDPA, as before",
    "plain": "explicit masked attention, unfused AdamW",
    "native-isa": "ours with CPU kernels free to use AVX-512 (the library pins AVX2 for reproducibility)",
    "cpu-bf16": "ours with bf16 autocast on the CPU too, kernels free to use AVX-512 (BF16)",
    "compile": "ours with the model under torch.compile",
    "one-thread": "ours on one intra-op thread",
}


def step_figures(variant: str, size: str, device: str, steps: int) -> dict:
    """Tokens per second, peak memory and mean loss of `steps` training steps on one fixed batch
    (the same seed and batch for every variant, so their losses compare)."""
    device = torch.device(device)
    config, batch = SIZES[size]
    if variant == "one-thread":
        torch.set_num_threads(1)
    model_module.WORD_DRAWN_DROPOUT = variant != "torch-dropout"
    torch.manual_seed(0)
    model = TrajectoryTransformer(config)
    if variant == "plain":
        use_explicit_attention(model)
    model.to(device).train()
    fused = variant != "plain"
    optimizer = torch.optim.AdamW(model.optimizer_groups(0.1), lr=6e-4, betas=(0.9, 0.95),
                                  fused=fused and device.type == "cuda", foreach=None if fused else False)
    forward = torch.compile(model) if variant == "compile" else model
    tokens = torch.randint(0, 100, (batch, config.block_size + 1), device=device, generator=torch.Generator(device).manual_seed(1))
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    mask = torch.ones_like(targets, dtype=torch.float)
    weights = torch.tensor([1.0, 5.0, 1.0, 1.0], device=device)
    groups = target_groups(config, config.block_size, device)
    bf16 = (fused and device.type == "cuda") or variant == "cpu-bf16"
    losses = torch.zeros((), device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = forward(inputs)
        loss = weighted_loss(token_losses(logits, targets), mask, weights, groups)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss.detach()

    begun = time.perf_counter()
    step()  # warm-up: allocator, kernels (and compilation)
    warmup = time.perf_counter() - begun
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        losses += step()
    mean_loss = losses.item() / steps
    elapsed = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"tokens_per_second": round(batch * config.block_size * steps / elapsed),
            "seconds_per_step": round(elapsed / steps, 4),
            "first_step_seconds": round(warmup, 2),
            "mean_loss": round(mean_loss, 4),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "peak_memory_mib": round(peak / 2**20, 1),
            "memory_measure": "torch.cuda.max_memory_allocated" if device.type == "cuda" else "process peak RSS"}


@main.command("train-step")
@click.option("--size", type=click.Choice(sorted(SIZES)), default="hopper", show_default=True,
              help="hopper: the published model, batch 256; offline: the offline suite's model on Reacher, batch 64")
@click.option("--variants", default="ours,plain", show_default=True, help=f"comma-separated, the first is the baseline: {', '.join(VARIANTS)}")
@click.option("--steps", default=5, show_default=True)
@click.option("--rounds", default=1, show_default=True, help="run the variants this many times, interleaved; figures of the median round")
@click.option("--device", default="cuda" if torch.cuda.is_available() else "cpu", show_default="cuda if available")
@click.option("--variant", type=click.Choice(sorted(VARIANTS)), hidden=True)
def train_step(size: str, variants: str, steps: int, rounds: int, device: str, variant: str | None) -> None:
    """Training steps of one model size, variant by variant, each in its own process (so that
    peak memory, threads and kernel choice are its own), side by side in one run; speedups are
    against the first variant, median against median. Variants: ours, torch-dropout, plain,
    native-isa, cpu-bf16, compile, one-thread (see VARIANTS in trajectory_transformer/benchmarks.py)."""
    if variant:
        click.echo(json.dumps(step_figures(variant, size, device, steps)))
        return
    names = variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise click.BadParameter(f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}", param_hint="--variants")
    runs = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            command = [sys.executable, "-m", "trajectory_transformer.benchmarks", "train-step", "--variant", name,
                       "--size", size, "--steps", str(steps), "--device", device]
            # the best the CPU has (torch falls back to what it supports)
            native = {"ATEN_CPU_CAPABILITY": "avx512", "ONEDNN_MAX_CPU_ISA": "ALL"} if name in ("native-isa", "cpu-bf16") else {}
            result = subprocess.run(command, check=True, capture_output=True, text=True, env={**os.environ, **native})
            runs[name].append(json.loads(result.stdout.splitlines()[-1]))
    figures = {}
    for name in names:
        ordered = sorted(runs[name], key=lambda run: run["tokens_per_second"])
        figures[name] = {**ordered[len(ordered) // 2], "seconds_per_step_of_each_round": [run["seconds_per_step"] for run in runs[name]]}
        figures[name]["speedup"] = round(figures[name]["tokens_per_second"] / figures[names[0]]["tokens_per_second"], 2)
    figures.update(size=size, batch=SIZES[size][1], device=device, threads=torch.get_num_threads())
    click.echo(json.dumps(figures, indent=2))


@main.command("plan")
@click.option("--environments", default=10, show_default=True, help="batch for the batched figure")
@click.option("--device", default="cuda" if torch.cuda.is_available() else "cpu", show_default="cuda if available")
@click.option("--skip-published", is_flag=True, help="skip (a), about a minute on a 2-core CPU")
@click.option("--figure", type=click.Path(path_type=Path), help="also draw the latencies as this PNG (numbers beside it as .tsv)")
def plan_call(environments: int, device: str, skip_published: bool, figure: Path | None) -> None:
    """Seconds per planning call, hopper-sized model (random weights), the published hopper
    settings (horizon 15, beam 128, n_expand 2, 5 context transitions, cdf 0.6):
    (a) the published algorithm as the published code computes it: no cache, one environment,
    the input cropped to the last 5 transitions and re-encoded before every forward pass
    (learned positions), duplicate candidates kept, explicit masked attention;
    (a') the same algorithm through our model's fused attention;
    (b) ours, cached (rotary positions, sliding window), one environment;
    (c) ours, cached and batched over ENVIRONMENTS environments, per environment step."""
    from trajectory_transformer.planner import PlannerSpec, plan  # noqa: PLC0415

    device = torch.device(device)
    torch.manual_seed(0)
    observation_dim, action_dim, bins = 11, 3, 100
    data = np.random.default_rng(0).normal(size=(10_000, observation_dim + action_dim + 2))
    discretizer = Discretizer.fit(data, "quantile", DiscretizeSpec(n_bins=bins), observation_dim, action_dim)
    spec = PlannerSpec(horizon=15, beam_width=128, n_expand=2, context=5, action_cdf=0.6)
    dim = observation_dim + action_dim + 2

    def seconds(position_embedding: str, cached: bool, batch: int, explicit: bool = False, repeats: int = 1) -> float:
        """The published algorithm (uncached) keeps duplicate candidates, ours drops them. The
        median of `repeats` calls: on a shared 2-core machine single calls vary by 20 %."""
        config = ModelConfig(observation_dim=observation_dim, action_dim=action_dim, n_bins=bins, position_embedding=position_embedding)
        model = TrajectoryTransformer(config)
        if explicit:
            use_explicit_attention(model)
        model = model.to(device).eval()
        prefix = torch.randint(0, bins, (batch, 5 * dim + observation_dim), device=device)
        generator = torch.Generator(device=device).manual_seed(0)
        warm = PlannerSpec(horizon=2, beam_width=8, context=5, cached=cached)
        plan(model, discretizer, warm, prefix, generator)
        calls = []
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            plan(model, discretizer, replace(spec, cached=cached, distinct_candidates=cached), prefix, generator)
            if device.type == "cuda":
                torch.cuda.synchronize()
            calls.append(time.perf_counter() - start)
        return float(np.median(calls))

    figures = {"device": str(device), "threads": torch.get_num_threads(),
               "settings": "horizon 15, beam 128, n_expand 2, context 5, cdf 0.6, hopper-sized model"}
    figures["b_cached_one_env_s"] = round(seconds("rotary", True, 1, repeats=5), 3)
    figures["c_cached_batched_per_env_step_s"] = round(seconds("rotary", True, environments, repeats=3) / environments, 3)
    figures["c_environments"] = environments
    if not skip_published:
        figures["a_published_s"] = round(seconds("learned", False, 1, explicit=True), 3)
        figures["a_published_fused_attention_s"] = round(seconds("learned", False, 1), 3)
        figures["ratio_a_over_b"] = round(figures["a_published_s"] / figures["b_cached_one_env_s"], 1)
    click.echo(json.dumps(figures, indent=2))
    if figure is not None:
        latency_figure(figures, figure)


@main.command("plan-goal")
@click.option("--environments", default=10, show_default=True)
@click.option("--repeats", default=3, show_default=True, help="median of this many calls per configuration")
@click.option("--device", default="cuda" if torch.cuda.is_available() else "cpu", show_default="cuda if available")
def plan_goal(environments: int, repeats: int, device: str) -> None:
    """Seconds per goal-conditioned planning call, uncached (the crop re-encoded for every token)
    against cached (the crop encoded once per planned transition), side by side: the goals
    suite's four-rooms settings (observation 4, action 2, a 2-token goal prefix; 3 layers, 96
    wide; likelihood mode, horizon 5, beam 32, n_expand 2, context 5), random weights, ENVIRONMENTS
    environments per call."""
    from trajectory_transformer.planner import PlannerSpec, plan  # noqa: PLC0415

    device = torch.device(device)
    torch.manual_seed(0)
    observation_dim, action_dim, bins = 4, 2, 100
    data = np.random.default_rng(0).normal(size=(10_000, observation_dim + action_dim + 2))
    discretizer = Discretizer.fit(data, "quantile", DiscretizeSpec(n_bins=bins), observation_dim, action_dim)
    config = ModelConfig(observation_dim=observation_dim, action_dim=action_dim, n_bins=bins, n_layer=3, n_head=4,
                         n_embd=96, position_embedding="rotary", goal_dims=[0, 1])
    model = TrajectoryTransformer(config).to(device).eval()
    dim = config.transition_dim
    prefix = torch.randint(0, bins, (environments, 5 * dim + observation_dim), device=device)
    goal = torch.randint(0, bins, (environments, 2), device=device)
    spec = PlannerSpec(mode="likelihood", horizon=5, beam_width=32, n_expand=2, context=5)

    def seconds(cached: bool) -> float:
        generator = torch.Generator(device=device).manual_seed(0)
        plan(model, discretizer, replace(spec, horizon=1, cached=cached), prefix, generator, goal=goal)
        calls = []
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            plan(model, discretizer, replace(spec, cached=cached), prefix, generator, goal=goal)
            if device.type == "cuda":
                torch.cuda.synchronize()
            calls.append(time.perf_counter() - start)
        return float(np.median(calls))

    figures = {"device": str(device), "threads": torch.get_num_threads(), "environments": environments,
               "uncached_s": round(seconds(False), 3), "cached_s": round(seconds(True), 3)}
    figures["ratio_uncached_over_cached"] = round(figures["uncached_s"] / figures["cached_s"], 1)
    click.echo(json.dumps(figures, indent=2))


def latency_figure(figures: dict, path: Path) -> None:
    import matplotlib  # noqa: PLC0415 (only this option draws)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    bars = {label: figures[key] for key, label in (
        ("a_published_s", "(a) published: uncached, 1 env"),
        ("a_published_fused_attention_s", "(a') (a) with fused attention"),
        ("b_cached_one_env_s", "(b) ours: cached, 1 env"),
        ("c_cached_batched_per_env_step_s", f"(c) ours: cached, {figures['c_environments']} envs, per env"),
    ) if key in figures}
    plot, axis = plt.subplots(figsize=(7, 2.5))
    drawn = axis.barh(list(bars)[::-1], list(bars.values())[::-1], color="#4c72b0")
    axis.bar_label(drawn, fmt="%.2f s", padding=3)
    axis.set_xlim(0, max(bars.values()) * 1.2)
    axis.set_xlabel(f"seconds per planning call ({figures['device']}, {figures['threads']} threads)")
    axis.set_title(figures["settings"], fontsize=8)
    plot.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    plot.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(plot)
    path.with_suffix(".tsv").write_text("configuration\tseconds\n" + "".join(f"{k}\t{v}\n" for k, v in bars.items()))


if __name__ == "__main__":
    main()
