"""Atomic writes: a stage killed midway leaves nothing that could pass for a finished output."""

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_directory(path: Path):
    """Yield a scratch directory beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        yield scratch
        scratch.chmod(0o755)  # mkdtemp makes it private; outputs are ordinary folders
        if path.exists():
            shutil.rmtree(path)
        os.replace(scratch, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def write_json(path: Path, content) -> None:
    """Deterministic JSON (sorted keys), written to a temporary file and renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as f:
        json.dump(content, f, indent=2, sort_keys=True)
        f.write("\n")
    os.chmod(f.name, 0o644)
    os.replace(f.name, path)


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def folder_hash(path: Path) -> str:
    """SHA-256 over a folder's relative file names and contents, in sorted order."""
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        digest.update(file_hash(file).encode())
    return digest.hexdigest()


def write_training_report(report_dir: Path, metrics: dict, history: list[dict]) -> None:
    """`metrics.json` and dvclive curves (one point per entry of `history`, x = its "update")."""
    from dvclive import Live  # noqa: PLC0415 (a heavy import only training stages need)

    with atomic_directory(report_dir) as scratch:
        write_json(scratch / "metrics.json", metrics)
        live = Live(dir=str(scratch / "live"), save_dvc_exp=False, dvcyaml=False, report=None)
        for entry in history:
            live.step = entry["update"]
            for name, value in entry.items():
                if name != "update":
                    live.log_metric(name, value)
        live.end()
        # dvclive's summary repeats metrics.json and is no DVC output: git would track it
        (scratch / "live" / "metrics.json").unlink()
