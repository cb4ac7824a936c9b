import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT_FILES = ["dvc.yaml", "params.yaml", "conf", "stages", "trajectory_transformer", "cluster", "plots", ".dvc/config", ".dvcignore", ".gitignore"]


class Project:
    """A throw-away clone of the pipeline in its own git repository, driven by real `dvc`."""

    def __init__(self, path: Path):
        self.path = path
        self.env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                    "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                    "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(command, cwd=self.path, env=self.env, capture_output=True, text=True)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def dvc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", "dvc", *args, check=check)

    def stages_run(self, *args: str) -> list[str]:
        """Run `dvc repro ARGS`; the names of the stages that actually ran."""
        output = self.dvc("repro", *args).stdout
        return sorted(line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage"))

    def compose(self, suite: str) -> None:
        """params.yaml for a suite, composed by DVC's own Hydra code (what `dvc exp run -S` does)."""
        self.run(sys.executable, "cluster/compose_params.py", f"suite={suite}")


def make_project(root: Path) -> Project:
    """A git repository at root/project holding the pipeline's files; its default DVC remote
    (../../trajectory-transformer-dvc-storage) resolves to root/trajectory-transformer-dvc-storage."""
    path = root / "project"
    path.mkdir()
    for name in PROJECT_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, path / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, path / name)
    project = Project(path)
    project.run("git", "init", "-q")
    project.dvc("init", "-q", "--force")  # keeps the copied .dvc/config
    shutil.copy(ROOT / ".dvc/config", path / ".dvc/config")
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "init")
    return project


@pytest.fixture
def project(tmp_path) -> Project:
    return make_project(tmp_path)
