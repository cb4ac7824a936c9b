"""Remote storage: push from one clone, pull into fresh ones, and nothing is recomputed.
Against the default local-directory remote and a real S3 endpoint (moto's standalone server)."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from conftest import Project

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3_endpoint():
    """moto's standalone S3 server on 127.0.0.1, started and stopped here."""
    pytest.importorskip("moto.server", reason="moto[server] is not installed: pip install -e '.[test]'")
    pytest.importorskip("dvc_s3", reason="dvc-s3 is not installed: pip install -e '.[test]'")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        server.kill()
        pytest.fail("moto's S3 server did not start")
    import boto3

    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", **{k.lower(): v for k, v in S3_ENV.items() if k != "AWS_DEFAULT_REGION"},
                 region_name="us-east-1").create_bucket(Bucket="trajectory-transformer")
    yield f"http://127.0.0.1:{port}"
    server.terminate()
    server.wait(timeout=30)


def use_s3(project: Project, endpoint: str) -> None:
    """The project's `s3` remote, pointed at the test server; settings stay in config.local."""
    project.env.update(S3_ENV)
    project.dvc("remote", "modify", "--local", "s3", "endpointurl", endpoint)


@pytest.fixture(scope="module")
def pushed(tmp_path_factory, s3_endpoint):
    """The smoke suite built once, committed, and pushed (with the run-cache) to both remotes."""
    from conftest import make_project

    root = tmp_path_factory.mktemp("remote")
    project = make_project(root)
    project.compose("smoke")
    project.dvc("repro")
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "smoke results")
    project.dvc("push", "--run-cache")
    use_s3(project, s3_endpoint)
    project.dvc("push", "--run-cache", "-r", "s3")
    return root, project


def clone(root, project: Project, name: str) -> Project:
    subprocess.run(["git", "clone", "-q", str(project.path), str(root / name)], check=True, env=project.env)
    fresh = Project(root / name)
    fresh.env = {k: v for k, v in project.env.items() if k not in S3_ENV}
    return fresh


def assert_nothing_to_do(fresh: Project) -> None:
    assert "Data and pipelines are up to date" in fresh.dvc("status").stdout
    assert fresh.stages_run() == []
    assert (fresh.path / "models/reacher-medium/quantile/seed-0/model.safetensors").exists()


def test_a_fresh_clone_pulls_from_the_default_local_remote(pushed):
    root, project = pushed
    fresh = clone(root, project, "local-clone")
    assert not (fresh.path / "data/raw/reacher-medium").exists()
    fresh.dvc("pull")
    assert_nothing_to_do(fresh)


def test_a_fresh_clone_pulls_from_s3(pushed, s3_endpoint):
    root, project = pushed
    fresh = clone(root, project, "s3-clone")
    use_s3(fresh, s3_endpoint)
    fresh.dvc("pull", "-r", "s3")
    assert_nothing_to_do(fresh)


def test_repro_pull_rebuilds_a_fresh_clone_without_running_anything(pushed):
    root, project = pushed
    fresh = clone(root, project, "repro-pull-clone")
    output = fresh.dvc("repro", "--pull").stdout
    assert "Running stage" not in output
    assert_nothing_to_do(fresh)


def test_the_run_cache_restores_reverted_params_without_recomputing(pushed):
    """A clone with the pushed run-cache: change a planner param (evaluate reruns), change it
    back, and the earlier outputs come back from the run-cache."""
    root, project = pushed
    fresh = clone(root, project, "run-cache-clone")
    fresh.dvc("pull", "--run-cache")
    params = (fresh.path / "params.yaml").read_text()
    (fresh.path / "params.yaml").write_text(params.replace("beam_width: 4", "beam_width: 3"))
    ran = fresh.stages_run()
    evaluations = ["evaluate-imitation@reacher-medium-quantile-0", "evaluate-tt-q@pointmaze-umaze-quantile-0",
                   *(f"evaluate@{d}-quantile-0" for d in ("minigrid-multiroom", "pointmaze-fourrooms", "pointmaze-umaze", "reacher-medium"))]
    assert ran[: len(evaluations)] == evaluations
    (fresh.path / "params.yaml").write_text(params)
    output = fresh.dvc("repro").stdout
    # report reruns only if the evaluations changed; then it too comes from the run-cache
    assert "Running stage" not in output and output.count("is cached - skipping run") == len(ran)
    assert "Data and pipelines are up to date" in fresh.dvc("status").stdout
    assert os.path.exists(fresh.path / "reports/evaluate/reacher-medium/quantile/seed-0/metrics.json")


def test_an_experiment_travels_through_a_git_remote(pushed):
    """`dvc exp push` carries an experiment (refs/exps, which `git push` does not) and its data;
    a second clone lists, pulls and applies it, and has everything it needs."""
    root, project = pushed
    first = clone(root, project, "exp-first")
    origin = root / "origin.git"
    first.run("git", "init", "-q", "--bare", str(origin))
    first.run("git", "remote", "set-url", "origin", str(origin))
    first.run("git", "push", "-q", "origin", "HEAD:master")
    first.dvc("pull")
    first.dvc("exp", "run", "-n", "beam-3", "-S", "suite=smoke", "-S", "plan.beam_width=3")
    first.dvc("exp", "push", "origin", "beam-3")

    second = clone(root, first, "exp-second")  # a sibling: the same default DVC remote
    second.run("git", "remote", "set-url", "origin", str(origin))
    assert "beam-3" in second.dvc("exp", "list", "origin").stdout
    second.dvc("exp", "pull", "origin", "beam-3")
    second.dvc("exp", "apply", "beam-3")
    assert "beam_width: 3" in (second.path / "params.yaml").read_text()
    assert "Data and pipelines are up to date" in second.dvc("status").stdout
    ran = json.loads((second.path / "reports/evaluate/reacher-medium/quantile/seed-0/metrics.json").read_text())
    assert ran == json.loads((first.path / "reports/evaluate/reacher-medium/quantile/seed-0/metrics.json").read_text())


def test_a_choice_sweep_queues_one_experiment_per_choice(tmp_path):
    from conftest import make_project

    project = make_project(tmp_path)
    project.dvc("exp", "run", "--queue", "-S", "suite=smoke", "-S", "train.seeds=[0],[1]")
    assert project.dvc("queue", "status").stdout.count("Queued") == 2
    baseline = json.loads(project.dvc("exp", "show", "--json").stdout)[1]  # after the workspace
    queued = [rev["data"]["params"]["params.yaml"]["data"] for exp in baseline["experiments"] for rev in exp["revs"]]
    assert sorted(q["train"]["seeds"] for q in queued) == [[0], [1]] and {q["suite_name"] for q in queued} == {"smoke"}
    project.dvc("queue", "remove", "--queued")
    assert project.dvc("queue", "status").stdout.count("Queued") == 0
