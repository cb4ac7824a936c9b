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
can attend to them (published system §4); they are never predicted. Each goal token adds a
learned embedding of its own, with either position scheme: under rotary positions alone a goal
token would look like the current observation's token of the same dimension, told apart only
by its distance.

The planner's cache holds a goal prefix as keys every query sees, and a map embedding as what
every stepped token adds, so goal- and map-conditioned planning is incremental too.

Dropout on a CPU draws its masks three to a 64-bit random word (`dropout`): PyTorch's CPU
dropout draws one Mersenne-Twister number per element, which took about 40 % of a training step
at the offline suite's size (docs/planner.md, Benchmarks). A dropped element is one whose 16-bit
draw falls below round(p * 2^16), so p = 0.1 drops 6,554 of 65,536 (0.100006).

The map-conditioned variant (the paper's appendix F, MiniGrid) adds a context embedding, computed
by a small CNN from a map image of integer codes, to every token embedding of the sequence.
"""

from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch.nn import functional as F


WORD_DRAWN_DROPOUT = True  # False: PyTorch's dropout everywhere (the benchmark's before-and-after)


def dropout_mask(shape: torch.Size, p: float, dtype: torch.dtype) -> tuple[torch.Tensor, float]:
    """Dropout's mask for a CPU tensor of `shape` (1 kept, 0 dropped, as `dtype`: a product with
    it is a plain multiply, where torch.where takes several times as long) and the rescaling of
    the kept elements, drawn three 16-bit fields per 64-bit word (module docstring)."""
    threshold = round(p * 2**16)
    count = shape.numel()
    # random_ fills int64 with 63 random bits: the low three 16-bit fields are uniform
    words = torch.empty(-(-count // 3), dtype=torch.int64).random_()
    kept = words.view(torch.int16).view(-1, 4)[:, :3] >= threshold - 2**15
    return kept.view(-1)[:count].view(shape).to(dtype), 2**16 / (2**16 - threshold)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or not WORD_DRAWN_DROPOUT:
        return F.dropout(x, p, training)
    kept, scale = dropout_mask(x.shape, p, x.dtype)
    return x * kept.mul_(scale)


class Dropout(nn.Module):
    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


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
    position_embedding: str = "rotary"  # or "learned" (published); defaults are train.model's (ArchitectureSpec)
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
        self.resid_dropout = Dropout(config.dropout)
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
        kernel, which supports one. Training on a CPU computes it explicitly, for `dropout`'s masks
        (with dropout, PyTorch's CPU kernel computes the same explicit product)."""
        if self.explicit:
            scores = (q @ k.transpose(-2, -1)) / k.shape[-1] ** 0.5
            self.weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
            y = dropout(self.weights, self.dropout, self.training) @ v
        elif self.training and self.dropout > 0 and q.device.type == "cpu" and WORD_DRAWN_DROPOUT:
            # as few passes over the (B, H, T, T) weights as autograd allows: the scale goes on
            # q before the product, and dropout's rescaling on the far smaller output
            scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
            weights = torch.softmax(scores.masked_fill_(~mask, float("-inf")), dim=-1)
            kept, scale = dropout_mask(weights.shape, self.dropout, weights.dtype)
            y = ((weights * kept) @ v) * scale
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        batch, _, length, _ = y.shape
        return self.project(y.transpose(1, 2).reshape(batch, length, -1))

    def project(self, y: torch.Tensor) -> torch.Tensor:
        return self.resid_dropout(self.proj(y))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, rotary=None, cache: "LayerCache | None" = None) -> torch.Tensor:
        """A sequence x (B, T, C) under `mask`; with a `cache`, its keys and values are kept (the
        context of a search). Without a mask, one new token per candidate x (..., C) attends to
        everything its `cache` holds, `rotary` being that token's rotations (query's pre-scaled)."""
        if mask is None:
            if cache is None:
                raise ValueError("attention without a mask is a cached step: pass its cache")
            qkv = self.qkv(x).unflatten(-1, (3, self.n_head, -1))  # (..., 3, H, d)
            q, k = apply_rotary(qkv[..., :2, :, :], rotary).unbind(-3)
            cache.store(k, qkv[..., 2, :, :])
            return self.project(cache.attend(q).flatten(-2))
        q, k, v = self.split_heads(x)
        if rotary is not None:
            q, k = apply_rotary(q, rotary), apply_rotary(k, rotary)
        if cache is not None:
            cache.store(k, v)
        return self.attend(q, k, v, mask)


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.dropout = Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = SelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, rotary=None, cache: "LayerCache | None" = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask, rotary, cache)
        return x + self.mlp(self.ln_2(x))


class MapEncoder(nn.Module):
    """A small CNN from an (H, W) map of `codes` integer codes (one-hot channels) to one
    embedding of `width` (also the map input of goal-conditioned BC, critic.py)."""

    def __init__(self, map_shape: list[int] | tuple[int, ...], codes: int, width: int):
        super().__init__()
        self.codes = codes
        height, breadth = map_shape
        for _ in range(2):  # two stride-2 convolutions
            height, breadth = (height + 1) // 2, (breadth + 1) // 2
        self.net = nn.Sequential(
            nn.Conv2d(codes, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(32 * height * breadth, width),
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
        elif config.position_embedding != "rotary":
            raise ValueError(f"unknown position embedding {config.position_embedding!r}")
        if config.goal_length:
            self.goal_position_embedding = nn.Parameter(torch.zeros(1, config.goal_length, width))
        self.map_encoder = MapEncoder(config.map_shape, config.map_codes, width) if config.map_shape else None
        self.dropout = Dropout(config.dropout)
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
        return self.token_embedding(goal + self.goal_dims * self.config.n_bins) + self.goal_position_embedding

    def logits_at(self, hidden: torch.Tensor, first_position: int = 0) -> torch.Tensor:
        """Per-dimension heads: (B, T, width) hidden states at sequence positions
        first_position... to (B, T, V + 1) logits."""
        dims = self.config.transition_dim
        heads = self.heads[(first_position + torch.arange(hidden.shape[1], device=hidden.device)) % dims]
        return torch.einsum("btc,tvc->btv", hidden, heads)

    def visible(self, query_positions: torch.Tensor, key_positions: torch.Tensor, context: int | None) -> torch.Tensor:
        """(Q, K) boolean: which keys each query may attend to. Causal, never a value token, and
        with a `context` (transitions) only keys inside the query's window (`window_start`)."""
        allowed = (key_positions[None, :] <= query_positions[:, None]) & ~is_value(key_positions, self.config.transition_dim)[None, :]
        if context is not None:
            allowed &= key_positions[None, :] >= window_start(query_positions, context, self.config.transition_dim)[:, None]
        return allowed

    def attention_mask(self, length: int, device, context: int | None = None) -> torch.Tensor:
        """(G + T, G + T) boolean mask of a forward pass; goal tokens are visible to everyone."""
        goal = self.config.goal_length
        positions = torch.arange(length, device=device)
        sequence = self.visible(positions, positions, context)
        mask = torch.ones(goal + length, goal + length, dtype=torch.bool, device=device).tril()
        mask[goal:, goal:] = sequence
        return mask

    # ---------------------------------------------------------------- training and scoring
    def forward(self, tokens: torch.Tensor, goal: torch.Tensor | None = None, context: int | None = None,
                maps: torch.Tensor | None = None, map_embedding: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, V + 1) predicting token t + 1 from tokens <= t (and the goal prefix, and
        the (B, H, W) map context of a map-conditioned model, or its `map_embedding` (B, width)
        from `map_encoder` when a caller reuses it across calls, as the planner does).

        `context` (rotary positions only) restricts every query to its sliding window of `context`
        transitions: the planner's window policy, computed here without a cache."""
        return self.logits_at(self.hidden_states(tokens, goal, context, maps, map_embedding))

    def hidden_states(self, tokens: torch.Tensor, goal: torch.Tensor | None = None, context: int | None = None,
                      maps: torch.Tensor | None = None, map_embedding: torch.Tensor | None = None,
                      cache: "BeamCache | None" = None) -> torch.Tensor:
        """The final (B, T, width) hidden states of `forward`; with a `cache`, every layer keeps
        the sequence's keys and values in it."""
        batch, length = tokens.shape
        if length > self.config.block_size and (context is None or self.config.position_embedding != "rotary"):
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
        mask = self.attention_mask(length, x.device, context)
        layers = cache.layers if cache is not None else [None] * len(self.blocks)
        for block, layer in zip(self.blocks, layers):
            x = block(x, mask, rotary, layer)
        return self.ln_f(x[:, self.config.goal_length :])

    # ---------------------------------------------------------------- incremental decoding
    @torch.inference_mode()
    def prefill(self, tokens: torch.Tensor, cache: "BeamCache", goal: torch.Tensor | None = None,
                map_embedding: torch.Tensor | None = None) -> torch.Tensor:
        """Encode a search's context (E, P), after its goal prefix (E, G) if any, into an empty
        `cache`, under the cache's sliding window; the logits (E, V + 1) of its next token. A map
        embedding (E, width) is kept in the cache for the tokens stepped after."""
        if self.config.position_embedding != "rotary":
            raise ValueError("incremental decoding needs rotary positions")
        if self.map_encoder is not None and map_embedding is None:
            raise ValueError("a map-conditioned model needs its map embedding")
        cache.map_embedding = map_embedding
        hidden = self.hidden_states(tokens, goal, context=cache.context, map_embedding=map_embedding, cache=cache)
        return self.logits_at(hidden[:, -1:], tokens.shape[1] - 1)[:, 0]

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor, cache: "BeamCache") -> torch.Tensor:
        """One more token per candidate, (E, R, X), at the cache's next position: it attends to
        everything the cache holds inside its window; the logits (E, R, X, V + 1) of the token
        after it. Inference only: no dropout."""
        if self.training:
            raise ValueError("incremental decoding is inference only: call model.eval() first")
        position, rotation = cache.next_token()
        x = self.embed_tokens(tokens.reshape(-1, 1), position).view(*tokens.shape, -1)
        if cache.map_embedding is not None:
            x = x + cache.map_embedding[:, None, None, :]
        for block, layer in zip(self.blocks, cache.layers):
            x = block(x, None, rotation, layer)
        hidden = self.ln_f(x).view(-1, 1, x.shape[-1])
        return self.logits_at(hidden, position).view(*tokens.shape, -1)

    def crop(self, tokens: torch.Tensor, context: int) -> torch.Tensor:
        """The published crop: the last `context` transitions' worth of a transition-aligned
        (..., L) sequence, whole transitions dropped from the front."""
        return tokens[..., window_start(tokens.shape[-1] - 1, context, self.config.transition_dim) :]

    def optimizer_groups(self, weight_decay: float) -> list[dict]:
        """Weight decay on Linear weights and the heads only (not embeddings, norms, biases)."""
        decay = [m.weight for m in self.modules() if isinstance(m, nn.Linear)] + [self.heads]
        decay_ids = {id(p) for p in decay}
        rest = [p for p in self.parameters() if id(p) not in decay_ids]
        return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def is_value(positions: torch.Tensor, transition_dim: int) -> torch.Tensor:
    return positions % transition_dim == transition_dim - 1


def window_start(positions: torch.Tensor | int, context: int, transition_dim: int) -> torch.Tensor | int:
    """First visible position for a query at each position: the published planner crops its input
    to at most `context` x D - 1 tokens, dropping whole transitions from the front."""
    longest = context * transition_dim - 1
    excess = positions + 1 - longest
    excess = excess.clamp(min=0) if isinstance(excess, torch.Tensor) else max(excess, 0)
    return (excess + transition_dim - 1) // transition_dim * transition_dim


class BeamCache:
    """Keys and values of a beam search, kept at three levels so nothing is copied per beam: the
    shared context (one per environment), the kept beams, and the fresh tokens of the current
    candidates (beam x expansion), re-indexed only when candidates are kept (`select`).

    The window slides: a query at position p sees keys from `window_start(p)` on (the published
    crop, applied per query), so cached keys stay valid and nothing is re-encoded. Value tokens
    are never attended, so their keys are never kept. The beams' keys are rebuilt contiguous at
    each selection, with zeroed room for one more transition: one candidate per beam writes its
    keys there and a one-token step attends over the whole buffer with the unused slots masked
    (a batched matmul over a strided slice of a larger buffer measured twice as slow, and this
    product is the search's largest memory read). Expanded candidates keep their own keys in a
    small fresh buffer. A goal prefix is a fourth level, per environment and always visible; its
    G tokens come first, so a sequence position p is rotated as G + p, as in `hidden_states`.
    Positions are Python ints, so bookkeeping never waits for the device."""

    def __init__(self, config: ModelConfig, context: int):
        self.context, self.transition_dim = context, config.transition_dim
        self.head_dim = config.n_embd // config.n_head
        self.room = self.transition_dim - 1  # keys of one transition: all but its value
        self.goal_length = config.goal_length
        self.map_embedding: torch.Tensor | None = None  # (E, width), added to every stepped token
        self.layers = [LayerCache(self) for _ in range(config.n_layer)]
        self.position = 0  # of the next token
        self.beam_first = 0  # position of the beams' first kept key
        self.beam_keys = 0  # keys in the beams' buffers
        self.fresh_keys = 0  # keys in the candidates' fresh buffers (0 unless expanded)
        self.expanded = False
        self.rotations = torch.empty(0)
        # of the token being decoded: where its key goes (None: a value token) and what it sees
        self.slot: int | None = None
        self.first_shared = self.first_beam = 0

    def slots(self, position: int) -> int:
        """Kept keys before `position`: every position but the value tokens."""
        return position - position // self.transition_dim

    def stored_context(self, length: int) -> None:
        self.position = self.beam_first = length

    def next_token(self) -> tuple[int, torch.Tensor]:
        """Book the next token's key; its position and RoPE rotations (2, 1, head_dim / 2), the
        query's scaled by 1 / sqrt(head_dim), from a table grown by doubling. A transition that
        ended without a selection (a rollout) first gets room for the next one: every beam is
        kept as it is (a search with critic_score v and one candidate per beam pays this copy
        once per transition, before its own selection)."""
        position = self.position
        beams = self.layers[0].beams[0]
        if is_value(position - 1, self.transition_dim) and not self.expanded and beams.shape[-2] - self.beam_keys < self.room:
            # a transition ended without a selection (a rollout): keep every beam, with room for the next
            kept = torch.arange(beams.shape[1], device=beams.device).expand(beams.shape[:2])
            self.select(kept, torch.zeros_like(kept))
        self.slot = None
        if not is_value(position, self.transition_dim):
            if self.expanded:
                self.slot, self.fresh_keys = self.fresh_keys, self.fresh_keys + 1
            else:
                self.slot, self.beam_keys = self.beam_keys, self.beam_keys + 1
        window = window_start(position, self.context, self.transition_dim)
        self.first_shared = self.slots(window)
        self.first_beam = self.slots(max(window, self.beam_first)) - self.slots(self.beam_first)
        self.position += 1
        rotated = self.goal_length + position
        if rotated >= len(self.rotations):
            rotations = rotary_tables(torch.arange(2 * rotated + 1, device=beams.device), self.head_dim)
            self.rotations = torch.stack([rotations * self.head_dim ** -0.5, rotations], dim=1)[:, :, None, :]
        return position, self.rotations[rotated]

    def expand(self, n: int) -> None:
        """n candidates per beam from here on; with n > 1 their keys go to fresh buffers."""
        if self.fresh_keys:
            raise ValueError("expand a beam cache only after a selection: its fresh keys would be lost")
        self.expanded = n > 1
        for layer in self.layers:
            layer.expand(n if self.expanded else None)

    def select(self, beam: torch.Tensor, expansion: torch.Tensor) -> None:
        """Keep candidates (beam, expansion), each (E, R), as the new beams: their parent's keys
        followed by their fresh ones, then zeroed room; keys no future query can see (left of
        the window) are dropped."""
        E, R = beam.shape
        beams = self.layers[0].beams[0]
        first = max(self.beam_first, window_start(self.position, self.context, self.transition_dim))
        low = self.slots(first) - self.slots(self.beam_first)
        env = torch.arange(E, device=beams.device)[:, None]
        parents = (env * beams.shape[1] + beam).flatten()  # rows of the flattened (E x beams) buffers
        chosen = None
        if self.expanded:  # and of (E x beams x candidates)
            chosen = parents * self.layers[0].fresh[0].shape[2] + expansion.flatten()
        for layer in self.layers:
            layer.select(parents, chosen, low, (E, R))
        self.beam_first = first
        self.beam_keys = self.beam_keys - low + self.fresh_keys
        self.expanded, self.fresh_keys = False, 0


class LayerCache:
    """One layer's keys and values in a `BeamCache` (which keeps the bookkeeping)."""

    def __init__(self, owner: BeamCache):
        self.owner = owner
        self.goal: tuple[torch.Tensor, torch.Tensor] | None = None  # (E, H, G, d)
        self.shared: tuple[torch.Tensor, torch.Tensor] | None = None  # (E, H, context keys, d)
        self.beams: tuple[torch.Tensor, torch.Tensor] | None = None  # (E, R, H, keys + room, d)
        self.fresh: tuple[torch.Tensor, torch.Tensor] | None = None  # (E, R, X, H, room, d) once expanded

    def store(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """The first call stores the goal prefix and the context, (E, H, G + P, d); every later
        one the keys of one new token per candidate, (E, R, X, H, d)."""
        owner = self.owner
        if self.shared is None:
            G = owner.goal_length
            if G:
                self.goal = (k[:, :, :G].contiguous(), v[:, :, :G].contiguous())
            k, v = k[:, :, G:], v[:, :, G:]
            kept = ~is_value(torch.arange(k.shape[2], device=k.device), owner.transition_dim)
            self.shared = (k[:, :, kept].contiguous(), v[:, :, kept].contiguous())
            self.beams = tuple(k.new_zeros(k.shape[0], 1, k.shape[1], owner.room, k.shape[3]) for _ in "kv")
            owner.stored_context(k.shape[2])
        elif owner.slot is not None and not owner.expanded:  # one candidate per beam: the beam's own room
            self.beams[0][..., owner.slot, :], self.beams[1][..., owner.slot, :] = k[:, :, 0], v[:, :, 0]
        elif owner.slot is not None:
            self.fresh[0][..., owner.slot, :], self.fresh[1][..., owner.slot, :] = k, v

    def attend(self, q: torch.Tensor) -> torch.Tensor:
        """Attention of one query per candidate, q (E, R, X, H, d) already scaled, over the
        levels; returns (E, R, X, H, d)."""
        owner = self.owner
        E, R, X, H, d = q.shape
        # per environment: the goal prefix and the visible part of the context
        per_env = [self.goal] if self.goal is not None else []
        if owner.first_shared < self.shared[0].shape[-2]:
            per_env.append(tuple(t[..., owner.first_shared :, :] for t in self.shared))
        beam_k, beam_v = self.beams
        fresh = tuple(t[..., : owner.fresh_keys, :] for t in self.fresh) if owner.fresh_keys else None
        scores = []
        for keys, _ in per_env:  # one matmul per environment and head: (R X) queries against its keys
            product = q.reshape(E, R * X, H, d).transpose(1, 2) @ keys.transpose(-1, -2)
            scores.append(product.view(E, H, R, X, -1).permute(0, 2, 3, 1, 4))
        # per beam and head: its X candidates' queries against the whole buffer, unused slots masked
        per_beam = q.transpose(2, 3) @ beam_k.transpose(-1, -2)
        if owner.first_beam:
            per_beam[..., : owner.first_beam] = float("-inf")
        per_beam[..., owner.beam_keys :] = float("-inf")
        scores.append(per_beam.transpose(2, 3))
        if fresh is not None:  # per candidate: a few keys, elementwise
            scores.append((q.unsqueeze(-2) * fresh[0]).sum(-1))
        weights = (torch.cat(scores, dim=-1) if len(scores) > 1 else scores[0]).softmax(dim=-1)
        parts = iter(weights.split([s.shape[-1] for s in scores], dim=-1))
        outputs = []
        for _, values in per_env:
            w = next(parts).permute(0, 3, 1, 2, 4).reshape(E, H, R * X, -1)
            outputs.append((w @ values).view(E, H, R, X, d).permute(0, 2, 3, 1, 4))
        outputs.append((next(parts).transpose(2, 3) @ beam_v).transpose(2, 3))
        if fresh is not None:
            outputs.append((next(parts).unsqueeze(-1) * fresh[1]).sum(-2))
        return sum(outputs[1:], outputs[0])

    def expand(self, n: int | None) -> None:
        """Fresh buffers for n candidates per beam, or none."""
        E, R, H, _, d = self.beams[0].shape
        self.fresh = tuple(self.beams[0].new_empty(E, R, n, H, self.owner.room, d) for _ in "kv") if n else None

    def select(self, parents: torch.Tensor, chosen: torch.Tensor | None, low: int, rows: tuple[int, int]) -> None:
        owner = self.owner
        kept = []
        for old, fresh in zip(self.beams, self.fresh if chosen is not None else (None, None)):
            pieces = [old[..., low : owner.beam_keys, :].flatten(0, 1).index_select(0, parents)]
            if fresh is not None:
                pieces.append(fresh[..., : owner.fresh_keys, :].flatten(0, 2).index_select(0, chosen))
            pieces.append(old.new_zeros(rows[0] * rows[1], old.shape[2], owner.room, old.shape[-1]))
            kept.append(torch.cat(pieces, dim=-2).unflatten(0, rows))
        self.beams, self.fresh = tuple(kept), None


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

