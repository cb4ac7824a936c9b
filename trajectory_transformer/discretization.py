"""Per-dimension discretizers (the published scheme): uniform or quantile bins, V per dimension.

Tokenization: values below the first edge go to bin 0, at or above the last edge to bin V-1.
Reconstruction (decoding a token to a number) is a param:
- `midpoint`: the bin's midpoint, as published;
- `bin-mean` (our default): the mean of the training values that fell into the bin (the
  midpoint for an empty bin).
Expected rewards and values are sums of probability times the same reconstruction table.

Categorical columns. A column with at most V distinct training values (a sparse reward, a
discrete action, a grid coordinate) gets one bin per value, whatever the kind, and each of its
bins decodes to its value under either reconstruction. Without this, a reward that is 1 on
fewer than about 1/V of the steps shares the last quantile bin with the zeros: the planner
cannot tell reaching the goal from not reaching it, and the published midpoint decodes both
as 0.5. Edges of such a column sit at the values themselves (bin i = [u_i, u_i+1) holds u_i
alone; the top value fills the last bin), so the value of a bin is its left edge.

The artifact is a small JSON file: safe to load from an untrusted remote, readable by eye. It
records the SHA-256 of its own content, checked on load: an edited or corrupted file is refused.
"""

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from trajectory_transformer.config import Count
from trajectory_transformer.errors import RESTORE_OR_REBUILD, PipelineError

FORMAT = "trajectory-transformer-discretizer/3"  # /3: the file records its own SHA-256


def content_digest(content: dict) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


@dataclass
class DiscretizeSpec:
    """The `discretize` section of params.yaml: one discretizer per dataset and kind."""

    kinds: list[Literal["quantile", "uniform"]] = dataclasses.field(default_factory=lambda: ["quantile"])
    n_bins: Count = 100
    reconstruction: Literal["bin-mean", "midpoint"] = "bin-mean"


@dataclass
class Discretizer:
    kind: str
    reconstruction: str
    edges: np.ndarray  # (D, V + 1) float64, non-decreasing per row
    bin_means: np.ndarray  # (D, V) float64: mean training value per bin (midpoint if empty)
    observation_dim: int
    action_dim: int
    categorical: np.ndarray  # (D,) bool: one bin per distinct value (see the module docstring)
    dataset_sha256: str = ""  # the data it was fitted on, so later stages can check they belong together

    @property
    def n_bins(self) -> int:
        return self.edges.shape[1] - 1

    @property
    def termination_token(self) -> int:
        return self.n_bins

    @property
    def vocab_size(self) -> int:
        """Tokens per dimension: V bins plus the shared termination token."""
        return self.n_bins + 1

    @property
    def transition_dim(self) -> int:
        return self.edges.shape[0]

    @property
    def midpoints(self) -> np.ndarray:
        """(D, V) bin midpoints; a categorical column's bins are its values (their left edges)."""
        middle = 0.5 * (self.edges[:, :-1] + self.edges[:, 1:])
        return np.where(self.categorical[:, None], self.edges[:, :-1], middle)

    @property
    def table(self) -> np.ndarray:
        """(D, V) value each token decodes to, under the configured reconstruction."""
        return self.bin_means if self.reconstruction == "bin-mean" else self.midpoints

    @classmethod
    def fit(cls, data: np.ndarray, kind: str, spec: DiscretizeSpec, observation_dim: int, action_dim: int) -> "Discretizer":
        data = np.asarray(data, dtype=np.float64)
        if data.ndim != 2 or data.shape[1] != observation_dim + action_dim + 2:
            raise PipelineError(f"discretizer: expected (T, {observation_dim + action_dim + 2}) data, got {data.shape}")
        if len(data) < 2:
            raise PipelineError("discretizer: need at least two transitions to fit bins")
        if spec.n_bins < 2:
            raise PipelineError(f"params discretize.n_bins must be at least 2, got {spec.n_bins}")
        if kind == "quantile":
            ranks = np.linspace(0, len(data) - 1, spec.n_bins + 1).round().astype(np.int64)
            edges = np.sort(data, axis=0)[ranks].T
        else:
            low, high = data.min(axis=0), data.max(axis=0)
            edges = low[:, None] + (high - low)[:, None] * np.linspace(0.0, 1.0, spec.n_bins + 1)[None, :]
        categorical = np.zeros(data.shape[1], dtype=bool)
        for dim in range(data.shape[1]):
            values = np.unique(data[:, dim])
            if len(values) <= spec.n_bins:
                categorical[dim] = True
                edges[dim] = np.concatenate([values, np.full(spec.n_bins + 1 - len(values), values[-1])])
        discretizer = cls(kind, spec.reconstruction, edges, np.zeros((edges.shape[0], spec.n_bins)), observation_dim,
                          action_dim, categorical)
        tokens = discretizer.tokenize(data)
        counts = np.zeros((edges.shape[0], spec.n_bins))
        sums = np.zeros_like(counts)
        for dim in range(edges.shape[0]):
            counts[dim] = np.bincount(tokens[:, dim], minlength=spec.n_bins)
            sums[dim] = np.bincount(tokens[:, dim], weights=data[:, dim], minlength=spec.n_bins)
        with np.errstate(invalid="ignore", divide="ignore"):
            discretizer.bin_means = np.where(counts > 0, sums / np.maximum(counts, 1), discretizer.midpoints)
        return discretizer

    def tokenize(self, data: np.ndarray, dims: slice | None = None) -> np.ndarray:
        """(..., D) values to (..., D) int64 bin indices in [0, V-1]; `dims` says which
        transition dimensions the last axis holds (all by default)."""
        data = np.asarray(data)
        edges = self.edges[dims if dims is not None else slice(None)]
        if data.shape[-1] != edges.shape[0]:
            raise PipelineError(f"discretizer: data has {data.shape[-1]} dims, expected {edges.shape[0]}")
        flat = data.reshape(-1, edges.shape[0])
        tokens = np.empty(flat.shape, dtype=np.int64)
        for dim in range(edges.shape[0]):
            tokens[:, dim] = np.searchsorted(edges[dim, 1:-1], flat[:, dim], side="right")
        return tokens.reshape(data.shape)

    def reconstruct(self, tokens: np.ndarray, dims: np.ndarray | slice | None = None) -> np.ndarray:
        """Token ids to values; `dims` says which transition dimensions the last axis holds."""
        tokens = np.asarray(tokens)
        table = self.table[dims if dims is not None else slice(None)]
        if tokens.shape[-1] != table.shape[0]:
            raise PipelineError(f"discretizer: {tokens.shape[-1]} tokens for {table.shape[0]} dimensions")
        return table[np.arange(table.shape[0]), np.minimum(tokens, self.n_bins - 1)]

    def expectation(self, probabilities: np.ndarray, dim: int) -> np.ndarray:
        """Expected value of dimension `dim` under (..., V) bin probabilities."""
        return probabilities @ self.table[dim]

    def observing(self, observation_dims: list[int]) -> "Discretizer":
        """The same bins for a partially observed dataset that keeps only `observation_dims`."""
        rows = list(observation_dims) + list(range(self.observation_dim, self.transition_dim))
        return dataclasses.replace(self, edges=self.edges[rows], bin_means=self.bin_means[rows],
                                   categorical=self.categorical[rows], observation_dim=len(observation_dims))

    # ------------------------------------------------------------------ the artifact
    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "kind": self.kind,
            "reconstruction": self.reconstruction,
            "n_bins": self.n_bins,
            "vocab_size": self.vocab_size,
            "observation_dim": self.observation_dim,
            "action_dim": self.action_dim,
            "transition_dim": self.transition_dim,
            "dataset_sha256": self.dataset_sha256,
            "layout": {
                "observation": [0, self.observation_dim],
                "action": [self.observation_dim, self.observation_dim + self.action_dim],
                "reward": self.observation_dim + self.action_dim,
                "value": self.observation_dim + self.action_dim + 1,
            },
            "categorical": np.flatnonzero(self.categorical).tolist(),
            "edges": self.edges.tolist(),
            "bin_means": self.bin_means.tolist(),
        }

    def save(self, path: Path) -> str:
        """Write the JSON artifact; returns its file's hash."""
        content = self.to_dict()
        text = json.dumps({**content, "sha256": content_digest(content)}, indent=1)
        Path(path).write_text(text)
        return hashlib.sha256(text.encode()).hexdigest()

    @classmethod
    def load(cls, path: Path) -> "Discretizer":
        path = Path(path)
        try:
            content = json.loads(path.read_text())
            if not isinstance(content, dict) or content.get("format") != FORMAT:
                found = content.get("format") if isinstance(content, dict) else type(content).__name__
                raise PipelineError(f"discretizer {path} is not a {FORMAT} file (found {found!r}): {RESTORE_OR_REBUILD}")
            recorded = content.pop("sha256", None)
            if recorded != content_digest(content):
                raise PipelineError(f"discretizer {path} differs from what its stage wrote (SHA-256 mismatch: corrupted "
                                    f"or edited): {RESTORE_OR_REBUILD}")
            edges = np.asarray(content["edges"], dtype=np.float64)
            categorical = np.zeros(edges.shape[0], dtype=bool)
            categorical[np.asarray(content["categorical"], dtype=np.int64)] = True
            discretizer = cls(
                kind=content["kind"],
                reconstruction=content["reconstruction"],
                edges=edges,
                bin_means=np.asarray(content["bin_means"], dtype=np.float64),
                observation_dim=int(content["observation_dim"]),
                action_dim=int(content["action_dim"]),
                categorical=categorical,
                dataset_sha256=str(content.get("dataset_sha256", "")),
            )
        except FileNotFoundError:
            raise PipelineError(f"no discretizer at {path}: run `dvc repro` for its discretize stage") from None
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as error:  # (invalid JSON is a ValueError)
            raise PipelineError(f"discretizer {path} is corrupt ({type(error).__name__}): {RESTORE_OR_REBUILD}") from None
        if discretizer.edges.ndim != 2 or discretizer.bin_means.shape != (discretizer.transition_dim, discretizer.n_bins):
            raise PipelineError(f"discretizer {path} is corrupt (inconsistent shapes): {RESTORE_OR_REBUILD}")
        return discretizer

