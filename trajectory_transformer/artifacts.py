"""Atomic writes: a stage killed midway leaves nothing that could pass for a finished output.
Folder manifests: a folder written by a stage records the SHA-256 of each of its files, and a
stage that reads it checks them first, so a corrupted or edited input is refused, not used."""

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from trajectory_transformer.errors import RESTORE_OR_REBUILD, PipelineError

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "trajectory-transformer-manifest/1"


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


def file_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under `folder` but its manifest, by relative path."""
    return {f.relative_to(folder).as_posix(): file_hash(f) for f in sorted(Path(folder).rglob("*"))
            if f.is_file() and f.relative_to(folder).as_posix() != MANIFEST}


def write_manifest(folder: Path) -> None:
    write_json(Path(folder) / MANIFEST, {"format": MANIFEST_FORMAT, "files": file_hashes(folder)})


def verified_folder_hash(folder: Path, what: str) -> str:
    """The hash of `folder` (that of its manifest) once every file matches its manifest; else
    one line naming the file and the fix."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PipelineError(f"no {what} at {folder}: run its stage (`dvc repro`) or `dvc pull`")
    manifest = folder / MANIFEST
    try:
        content = json.loads(manifest.read_text())
        recorded = content["files"] if isinstance(content, dict) and content.get("format") == MANIFEST_FORMAT else None
    except FileNotFoundError:
        raise PipelineError(f"{what} {folder} has no {MANIFEST}, so it was not written by this pipeline's stage: {RESTORE_OR_REBUILD}") from None
    except ValueError:
        recorded = None
    if not isinstance(recorded, dict):
        raise PipelineError(f"{manifest} is corrupt or not a {MANIFEST_FORMAT} file: {RESTORE_OR_REBUILD}")
    found = file_hashes(folder)
    for name in sorted(set(recorded) | set(found)):
        if name not in found:
            raise PipelineError(f"{what} {folder} lacks {name}: {RESTORE_OR_REBUILD}")
        if found[name] != recorded.get(name):
            raise PipelineError(f"{folder / name} differs from what its stage wrote (SHA-256 mismatch: corrupted or edited): {RESTORE_OR_REBUILD}")
    return file_hash(manifest)


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
