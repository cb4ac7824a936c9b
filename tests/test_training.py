import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from toy_training import SEQUENCE, run, toy_setup, toy_spec, toy_transitions
from trajectory_transformer.datasets import Transitions
from trajectory_transformer.errors import PipelineError
from trajectory_transformer.training import CHECKPOINT_FORMAT, OptimSpec, RunIdentity, learning_rate, load_model, tokenize_paths, train

HERE = Path(__file__).parent


def history(out: Path, metric: str) -> list[float]:
    rows = (out / "report/live/plots/metrics" / f"{metric}.tsv").read_text().splitlines()[1:]
    return [float(row.split("\t")[1]) for row in rows]


def script(out: Path, max_updates: int, checkpoint_every: int = 1000, dropout: float = 0.0) -> list[str]:
    return [str(HERE / "toy_training.py"), str(out), str(max_updates), str(checkpoint_every), str(dropout)]


def test_schedule_published_cosine_is_never_clamped():
    # the authors' Trainer: warm-up over one epoch, then lr = peak * max(0.1, 0.5 (1 + cos(pi p))),
    # p = (update - warmup) / (20 epochs - warmup), unclamped: at the floor from p ~ 0.8, rising past 1.2
    spec = OptimSpec(learning_rate=1.0, lr_schedule="published")
    per_epoch, total = 10, 500  # 50 epochs
    lr = [learning_rate(u, total, per_epoch, per_epoch, spec) for u in range(total)]
    assert lr[9] == pytest.approx(1.0) and lr[10] == pytest.approx(1.0)
    assert lr[10 + 95] == pytest.approx(0.5)  # p = 0.5
    assert lr[10 + 171] == pytest.approx(0.1)  # p = 0.9: the floor
    assert lr[10 + 190] == pytest.approx(0.1)  # p = 1
    assert lr[10 + 285] == pytest.approx(0.5)  # p = 1.5: rising again
    assert lr[10 + 380] == pytest.approx(1.0)  # p = 2: back at the peak
    # ours: one decay over the whole run, ending at the floor
    ours = [learning_rate(u, total, per_epoch, per_epoch, OptimSpec(learning_rate=1.0)) for u in range(total)]
    assert ours[-1] == pytest.approx(0.1, abs=1e-4) and all(a >= b for a, b in zip(ours[10:], ours[11:]))


def test_loss_falls_and_the_model_predicts_the_toy_trajectory(tmp_path):
    metrics = run(tmp_path, max_updates=300)
    losses = history(tmp_path, "train/loss")
    assert losses[-1] < 0.2 * losses[0]
    assert metrics["validation/observation"] < 0.05

    model, metadata = load_model(tmp_path / "model")
    token_paths, discretizer = toy_setup()
    path = torch.from_numpy(token_paths[0])  # (8 steps, 4 tokens): position, action, reward, value
    context = path[:2].reshape(-1)  # two whole transitions
    predicted = model(context[None])[0, -1].argmax().item()
    assert predicted == path[2, 0].item()  # the next position, from the value slot of step 1
    assert metadata["dataset"] == "toy" and metadata["model_config"]["window"] == 3


def test_identical_seeds_give_identical_weight_files(tmp_path):
    run(tmp_path / "a", max_updates=30, dropout=0.1)
    run(tmp_path / "b", max_updates=30, dropout=0.1)
    run(tmp_path / "c", max_updates=30, dropout=0.1, seed=1)
    weights = [(tmp_path / name / "model/model.safetensors").read_bytes() for name in "abc"]
    assert weights[0] == weights[1] != weights[2]
    assert (tmp_path / "a/report/metrics.json").read_text() == (tmp_path / "b/report/metrics.json").read_text()


def test_a_killed_run_resumes_to_the_same_weights(tmp_path):
    run(tmp_path / "whole", max_updates=400, dropout=0.1)
    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen([sys.executable, *script(interrupted, 400, checkpoint_every=20, dropout=0.1)])
    deadline = time.time() + 120
    while not (interrupted / "checkpoint.pt").exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.005)
    time.sleep(0.2)  # past the first checkpoint, before the end
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (interrupted / "model").exists()  # nothing that passes for a finished output
    assert torch.load(interrupted / "checkpoint.pt", weights_only=True)["update"] > 0
    run(interrupted, max_updates=400, checkpoint_every=20, dropout=0.1)
    assert (interrupted / "model/model.safetensors").read_bytes() == (tmp_path / "whole/model/model.safetensors").read_bytes()
    assert not (interrupted / "checkpoint.pt").exists()


def test_a_checkpoint_of_another_run_is_ignored(tmp_path):
    run(tmp_path / "whole", max_updates=30)
    (tmp_path / "resumed").mkdir()
    torch.save({"format": CHECKPOINT_FORMAT, "fingerprint": "0" * 64, "update": 20, "history": [], "model": {},
                "optimizer": {}, "running": {"sum": 0.0, "count": 0}, "cpu_rng": torch.get_rng_state()},
               tmp_path / "resumed/checkpoint.pt")  # another run's: other data, params or seed
    run(tmp_path / "resumed", max_updates=30)
    assert (tmp_path / "resumed/model/model.safetensors").read_bytes() == (tmp_path / "whole/model/model.safetensors").read_bytes()


def test_cpu_kernels_are_pinned_to_avx2_so_results_hold_across_x86_machines():
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("the pin is for x86-64")
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")}
    probe = "import torch, trajectory_transformer; print(torch.backends.cpu.get_cpu_capability())"
    assert subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True).stdout.strip() == "AVX2"


def test_ddp_on_two_gloo_processes_follows_the_single_process_curve(tmp_path):
    """Same global batch (16 = 2 x 8), dropout off: the curves agree within 1e-4 relative
    (all-reduce sums gradients in another order than one process does)."""
    run(tmp_path / "single", max_updates=60)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
                    f"--master_port={port}", *script(tmp_path / "ddp", 60)], check=True, env=env, timeout=300)
    for metric in ("train/loss", "validation/observation", "validation/action"):
        single, ddp = history(tmp_path / "single", metric), history(tmp_path / "ddp", metric)
        assert len(single) == len(ddp) == 3
        assert np.allclose(single, ddp, rtol=1e-4), (metric, single, ddp)


def test_mismatched_discretizer_is_refused():
    token_paths, discretizer = toy_setup()
    wider = toy_transitions()
    wider = Transitions(np.concatenate([wider.observations] * 2, axis=1), wider.actions, wider.rewards, wider.terminals, wider.timeouts)
    with pytest.raises(PipelineError, match="rerun its discretize stage"):
        tokenize_paths(wider, discretizer, SEQUENCE)


def test_a_dataset_too_short_for_one_window_is_refused(tmp_path):
    single_steps = Transitions(np.zeros((4, 1), np.float32), np.zeros((4, 1), np.float32), np.zeros(4, np.float32),
                               np.zeros(4, bool), np.ones(4, bool))
    _, discretizer = toy_setup()
    with pytest.raises(PipelineError, match="no window"):
        train(tokenize_paths(single_steps, discretizer, SEQUENCE), discretizer, SEQUENCE, toy_spec(5),
              RunIdentity("x", "a", "b", "uniform", 0), tmp_path / "m", tmp_path / "r", tmp_path / "c.pt", progress=False)
    assert not (tmp_path / "m").exists()


def test_corrupt_or_truncated_files_are_one_clear_line(tmp_path):
    run(tmp_path, max_updates=5)
    weights = tmp_path / "model/model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(PipelineError, match="corrupt"):
        load_model(tmp_path / "model")
    with pytest.raises(PipelineError, match="no weights at .*dvc repro"):
        load_model(tmp_path / "nothing")
    (tmp_path / "checkpoint.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    with pytest.raises(PipelineError, match="corrupt or truncated"):
        run(tmp_path, max_updates=5)


def test_a_cuda_request_without_cuda_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    token_paths, discretizer = toy_setup()
    spec = toy_spec(5)
    spec.run.device = "cuda"
    with pytest.raises(PipelineError, match="no CUDA device"):
        train(token_paths, discretizer, SEQUENCE, spec, RunIdentity("x", "a", "b", "uniform", 0),
              tmp_path / "m", tmp_path / "r", tmp_path / "c.pt", progress=False)


def test_the_goal_conditioned_variant_trains_with_the_final_state_first(tmp_path):
    token_paths, discretizer = toy_setup()
    spec = toy_spec(20)
    final_states = np.stack([discretizer.reconstruct(p[-1:, :1], slice(0, 1))[0] for p in token_paths])
    train(token_paths, discretizer, SEQUENCE, spec, RunIdentity("x", "a", "b", "uniform", 0, goal_dims=[0]),
          tmp_path / "m", tmp_path / "r", tmp_path / "c.pt", progress=False, path_goals=final_states)
    model, metadata = load_model(tmp_path / "m")
    assert metadata["model_config"]["goal_dims"] == [0]
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())  # how much its actions depend on the goal
    assert metrics["validation/action_other_goal"] > 0 and "validation/action" in metrics
    tokens = torch.from_numpy(token_paths[0][:2].reshape(1, -1))
    goal = torch.tensor([[int(token_paths[0][-1, 0])]])
    assert not torch.equal(model(tokens, goal), model(tokens, goal - 1))
