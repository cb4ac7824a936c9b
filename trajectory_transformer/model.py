"""The Trajectory Transformer: a GPT decoder over per-dimension tokens (docs/published-system.md §3).

A transition [observation (N), action (M), reward, value] is D = N + M + 2 tokens, each the bin
index of one dimension (V bins, token V = termination). Each dimension has its own embeddings
(token ids offset by (position mod D) x V) and its own bias-free output head; the termination
token shares one embedding. Attention never looks at value tokens, so a placeholder value can
sit in the context at planning time. Pre-LayerNorm blocks, GELU MLP, dropout everywhere.

One departure: the published model still embeds the value token at its own position, so the
prediction made there (the next observation's first token) depends on the placeholder value in
the context. We embed every value input as one learned slot: value tokens are prediction
targets only, and a placeholder changes no logit anywhere.

Positions are a param: `learned` absolute embeddings as published, or `rotary` (RoPE), whose
cached keys stay valid when the planner's context window slides (the planner issue needs it).

The goal-conditioned variant puts G goal tokens (chosen observation dimensions of the goal
state, embedded with those dimensions' tables) at the start of every sequence, so every token
can attend to them (published system §4); they are never predicted.

The map-conditioned variant (the paper's appendix F, MiniGrid) adds a context embedding, computed
by a small CNN from a map image of integer codes, to every token embedding of the sequence.
"""

from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch.nn import functional as F


@dataclass
class ModelConfig:
    observation_dim: int
    action_dim: int
    n_bins: int  # V: bins per dimension; token V is the termination token
    window: int = 10  # transitions per sequence
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.1
    position_embedding: str = "learned"  # "learned" (published) or "rotary"
    goal_dims: list[int] = field(default_factory=list)  # observation dims of the goal prefix
    map_shape: list[int] = field(default_factory=list)  # (H, W) of the map context; empty: none
    map_codes: int = 0  # distinct integer codes in a map image

    @property
    def transition_dim(self) -> int:
        return self.observation_dim + self.action_dim + 2

    @property
    def block_size(self) -> int:
        """Longest input: `window` transitions minus the last token (it is only a target)."""
        return self.window * self.transition_dim - 1

    @property
    def goal_length(self) -> int:
        return len(self.goal_dims)


def rotary_tables(positions: torch.Tensor, head_dim: int) -> torch.Tensor:
    """RoPE rotations e^(i position frequency) for integer `positions` (T,), shaped (T, head_dim / 2)."""
    inverse_frequency = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim))
    angles = positions.float()[:, None] * inverse_frequency[None, :]
    return torch.polar(torch.ones_like(angles), angles)


def apply_rotary(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive pairs of the last axis of a (..., T, head_dim) tensor."""
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(pairs * rotations).flatten(-2).type_as(x)


class SelfAttention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)
        # explicit: the textbook computation, as the published code does it; it keeps the
        # attention weights of the last call in `weights` (attention maps)
        self.explicit = False
        self.weights: torch.Tensor | None = None

    def split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, length, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=2)
        shape = (batch, length, self.n_head, width // self.n_head)
        return (t.view(shape).transpose(1, 2) for t in (q, k, v))

    def attend(self, q, k, v, mask: torch.Tensor) -> torch.Tensor:
        """Attention of q over (k, v) with a boolean `mask` (True = may attend), then projection.

        A mask rules out the flash kernel; on CUDA, PyTorch picks its fused memory-efficient
        kernel, which supports one."""
        if self.explicit:
            scores = (q @ k.transpose(-2, -1)) / k.shape[-1] ** 0.5
            self.weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
            y = F.dropout(self.weights, self.dropout, self.training) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        batch, _, length, _ = y.shape
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(batch, length, -1)))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, rotary=None) -> torch.Tensor:
        q, k, v = self.split_heads(x)
        if rotary is not None:
            q, k = apply_rotary(q, rotary), apply_rotary(k, rotary)
        return self.attend(q, k, v, mask)


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = SelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, rotary=None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask, rotary)
        return x + self.mlp(self.ln_2(x))


class MapEncoder(nn.Module):
    """A small CNN from an (H, W) map of integer codes (one-hot channels) to one embedding."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.codes = config.map_codes
        height, width = config.map_shape
        for _ in range(2):  # two stride-2 convolutions
            height, width = (height + 1) // 2, (width + 1) // 2
        self.net = nn.Sequential(
            nn.Conv2d(config.map_codes, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(32 * height * width, config.n_embd),
        )

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        one_hot = F.one_hot(maps.long().clamp(max=self.codes - 1), self.codes).permute(0, 3, 1, 2).float()
        return self.net(one_hot)


class TrajectoryTransformer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        dims, bins, width = config.transition_dim, config.n_bins, config.n_embd
        # + the shared termination token and the value slot
        self.token_embedding = nn.Embedding(dims * bins + 2, width)
        if config.position_embedding == "learned":
            self.position_embedding = nn.Parameter(torch.zeros(1, config.block_size, width))
            if config.goal_length:
                self.goal_position_embedding = nn.Parameter(torch.zeros(1, config.goal_length, width))
        elif config.position_embedding != "rotary":
            raise ValueError(f"unknown position embedding {config.position_embedding!r}")
        self.map_encoder = MapEncoder(config) if config.map_shape else None
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(width)
        # one bias-free head (width -> V + 1) per position within a transition
        self.heads = nn.Parameter(torch.empty(dims, bins + 1, width))
        self.register_buffer("goal_dims", torch.tensor(config.goal_dims, dtype=torch.long), persistent=False)
        self.apply(self._init_weights)
        nn.init.normal_(self.heads, std=0.02)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    # ---------------------------------------------------------------- pieces the planner reuses
    def token_ids(self, tokens: torch.Tensor, first_position: int | torch.Tensor = 0) -> torch.Tensor:
        """Embedding rows of sequence tokens whose first token sits at `first_position` (counted
        in tokens from the start of a transition-aligned sequence)."""
        dims, bins = self.config.transition_dim, self.config.n_bins
        position = first_position + torch.arange(tokens.shape[-1], device=tokens.device)
        ids = torch.where(tokens == bins, dims * bins, tokens + (position % dims) * bins)
        return torch.where(position % dims == dims - 1, dims * bins + 1, ids)

    def embed_tokens(self, tokens: torch.Tensor, first_position: int | torch.Tensor = 0) -> torch.Tensor:
        return self.token_embedding(self.token_ids(tokens, first_position))

    def embed_goal(self, goal: torch.Tensor) -> torch.Tensor:
        embedding = self.token_embedding(goal + self.goal_dims * self.config.n_bins)
        if self.config.position_embedding == "learned":
            embedding = embedding + self.goal_position_embedding
        return embedding

    def logits_at(self, hidden: torch.Tensor, first_position: int = 0) -> torch.Tensor:
        """Per-dimension heads: (B, T, width) hidden states at sequence positions
        first_position... to (B, T, V + 1) logits."""
        dims = self.config.transition_dim
        heads = self.heads[(first_position + torch.arange(hidden.shape[1], device=hidden.device)) % dims]
        return torch.einsum("btc,tvc->btv", hidden, heads)

    def is_value(self, positions: torch.Tensor) -> torch.Tensor:
        return positions % self.config.transition_dim == self.config.transition_dim - 1

    def visible(self, query_positions: torch.Tensor, key_positions: torch.Tensor, band: int | None) -> torch.Tensor:
        """(Q, K) boolean: which keys each query may attend to. Causal, never a value token, and
        with `band` (transitions) only keys inside the query's window (`window_start`)."""
        allowed = (key_positions[None, :] <= query_positions[:, None]) & ~self.is_value(key_positions)[None, :]
        if band is not None:
            allowed &= key_positions[None, :] >= window_start(query_positions, band, self.config.transition_dim)[:, None]
        return allowed

    def attention_mask(self, length: int, device, band: int | None = None) -> torch.Tensor:
        """(G + T, G + T) boolean mask of a forward pass; goal tokens are visible to everyone."""
        goal = self.config.goal_length
        positions = torch.arange(length, device=device)
        sequence = self.visible(positions, positions, band)
        mask = torch.ones(goal + length, goal + length, dtype=torch.bool, device=device).tril()
        mask[goal:, goal:] = sequence
        return mask

    # ---------------------------------------------------------------- training and scoring
    def forward(self, tokens: torch.Tensor, goal: torch.Tensor | None = None, band: int | None = None,
                maps: torch.Tensor | None = None, map_embedding: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, V + 1) predicting token t + 1 from tokens <= t (and the goal prefix, and
        the (B, H, W) map context of a map-conditioned model, or its `map_embedding` (B, width)
        from `map_encoder` when a caller reuses it across calls, as the planner does).

        `band` (rotary positions only) restricts every query to its sliding window of `band`
        transitions: the planner's window policy, computed here without a cache."""
        batch, length = tokens.shape
        if length > self.config.block_size and (band is None or self.config.position_embedding != "rotary"):
            raise ValueError(f"sequence of {length} tokens exceeds the block size {self.config.block_size} "
                             "(only rotary positions slide a window past it)")
        x = self.embed_tokens(tokens)
        if self.config.position_embedding == "learned":
            x = x + self.position_embedding[:, :length]
        if self.config.goal_length:
            x = torch.cat([self.embed_goal(goal), x], dim=1)
        if self.map_encoder is not None:
            if map_embedding is None:
                if maps is None:
                    raise ValueError("a map-conditioned model needs its maps")
                map_embedding = self.map_encoder(maps)
            x = x + map_embedding[:, None, :]
        x = self.dropout(x)
        rotary = None
        if self.config.position_embedding == "rotary":
            rotary = rotary_tables(torch.arange(x.shape[1], device=x.device), self.config.n_embd // self.config.n_head)
        mask = self.attention_mask(length, x.device, band)
        for block in self.blocks:
            x = block(x, mask, rotary)
        hidden = self.ln_f(x[:, self.config.goal_length :])
        return self.logits_at(hidden)

    def optimizer_groups(self, weight_decay: float) -> list[dict]:
        """Weight decay on Linear weights and the heads only (not embeddings, norms, biases)."""
        decay = [m.weight for m in self.modules() if isinstance(m, nn.Linear)] + [self.heads]
        decay_ids = {id(p) for p in decay}
        rest = [p for p in self.parameters() if id(p) not in decay_ids]
        return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def window_start(positions: torch.Tensor | int, transitions: int, transition_dim: int) -> torch.Tensor | int:
    """First visible position for a query at each position: the published planner crops its input
    to at most `transitions` x D - 1 tokens, dropping whole transitions from the front."""
    longest = transitions * transition_dim - 1
    excess = positions + 1 - longest
    excess = excess.clamp(min=0) if isinstance(excess, torch.Tensor) else max(excess, 0)
    return (excess + transition_dim - 1) // transition_dim * transition_dim


TOKEN_GROUPS = ("observation", "action", "reward", "value")


def target_groups(config: ModelConfig, length: int, device=None) -> torch.Tensor:
    """Group index (0 observation, 1 action, 2 reward, 3 value) of each target token: the target
    at input position t is sequence token t + 1."""
    dimension = (torch.arange(1, length + 1, device=device)) % config.transition_dim
    group = torch.zeros(length, dtype=torch.long, device=device)
    group[dimension >= config.observation_dim] = 1
    group[dimension == config.transition_dim - 2] = 2
    group[dimension == config.transition_dim - 1] = 3
    return group


def token_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token cross-entropy, (B, T), in float32 whatever the autocast dtype."""
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none").view(targets.shape)


def weighted_loss(losses: torch.Tensor, mask: torch.Tensor, group_weights: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """The published objective: weighted cross-entropy, masked past the maximum path length,
    averaged over all positions."""
    return (losses * group_weights[groups] * mask).mean()


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

