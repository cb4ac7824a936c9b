"""Devices, resumable checkpoints and published weights, shared by every trained network.

Weights are published as safetensors: `torch.save` stamps every file with a random
serialization id (identical weights, different bytes, downstream stages rerun for nothing), and
a safetensors file is safe to read from an untrusted remote. Checkpoints are read with
`torch.load(weights_only=True)`: nothing is ever unpickled. A weights file records the SHA-256
of its header and tensors, checked on every load: a file changed in any byte (corrupted in
storage or transfer, or edited) is refused, and so are non-finite weights.
"""

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from trajectory_transformer.errors import RESTORE_OR_REBUILD, PipelineError

HEADER_KEY = "trajectory_transformer"


def resolve_device(requested: str, local_rank: int = 0) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise PipelineError("params device is cuda but this machine has no CUDA device: set it to auto or cpu")
    if requested in ("cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def use_cpu_threads(threads: int) -> None:
    """`threads` intra-op threads, with deterministic kernels: multi-threaded CPU backward is not
    bitwise stable otherwise. The flag is set directly: `torch.use_deterministic_algorithms`
    also imports torch._inductor to set its own flag (1.4 s at every stage start; we never compile)."""
    torch.set_num_threads(threads)
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None:
        torch.use_deterministic_algorithms(True)
    else:
        setter(True, warn_only=False)


def save_checkpoint(content: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.partial")
    torch.save(content, scratch)
    os.replace(scratch, path)


def load_checkpoint(path: Path, expected_format: str) -> dict:
    """torch.load with weights_only=True (never unpickle a file from a remote), checked."""
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise PipelineError(f"no checkpoint at {path}: run its stage (`dvc repro`) or `dvc pull`") from None
    except Exception as error:  # truncated zip, bad pickle opcodes, foreign objects
        raise PipelineError(f"{path} is corrupt or truncated ({type(error).__name__}); delete it and rerun `dvc repro`, or `dvc pull` it again") from None
    if not isinstance(content, dict) or content.get("format") != expected_format:
        raise PipelineError(f"{path} is not a {expected_format} file; delete it and rerun `dvc repro`")
    return content


def weights_digest(header: dict, state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the header (format, metadata) and every tensor's name, dtype, shape and bytes."""
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    for key in sorted(state):
        tensor = state[key].contiguous()
        digest.update(f"\0{key}\0{tensor.dtype}\0{list(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_weights(module: torch.nn.Module, path: Path, file_format: str, metadata: dict) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    header = {"format": file_format, "metadata": metadata}
    # one header key: safetensors writes its metadata map in hash order
    content = json.dumps({**header, "sha256": weights_digest(header, state)}, sort_keys=True)
    save_file(state, path, metadata={HEADER_KEY: content})


def load_weights(path: Path, file_format: str, build) -> tuple[torch.nn.Module, dict]:
    """`build(metadata)` makes the module the weights are loaded into; a file that is not what
    its stage wrote (any changed byte, truncation, another kind of file, non-finite weights) or
    does not fit the code is refused in one line naming the fix."""
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"no weights at {path}: run the stage that makes them (`dvc repro`) or `dvc pull`")
    try:
        with safe_open(path, framework="pt") as f:
            content = json.loads((f.metadata() or {}).get(HEADER_KEY, "{}"))
            state = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as error:  # truncated, not a safetensors file, a header that is no JSON
        raise PipelineError(f"{path} is corrupt or truncated ({type(error).__name__}): {RESTORE_OR_REBUILD}") from None
    if not isinstance(content, dict) or content.get("format") != file_format:
        found = content.get("format") if isinstance(content, dict) else None
        raise PipelineError(f"{path} is not a {file_format} file (found {found!r}): {RESTORE_OR_REBUILD}")
    header = {"format": content["format"], "metadata": content.get("metadata")}
    if content.get("sha256") != weights_digest(header, state):
        raise PipelineError(f"{path} differs from what its stage wrote (SHA-256 mismatch: corrupted or edited): {RESTORE_OR_REBUILD}")
    broken = next((key for key, tensor in state.items() if tensor.is_floating_point() and not torch.isfinite(tensor).all()), None)
    if broken is not None:
        raise PipelineError(f"{path} holds non-finite weights ({broken}): the run that wrote it diverged; retrain it "
                            "(`dvc repro --force` of its stage), e.g. with a lower learning rate")
    try:
        module = build(header["metadata"])
        module.load_state_dict(state)
    except Exception as error:
        raise PipelineError(f"{path} does not match the code ({type(error).__name__}): rebuild it with `dvc repro`") from None
    return module, header["metadata"]
