"""Beam-search planning with the Trajectory Transformer (docs/published-system.md §4), read top to bottom.

One call plans for E environments at once. Per environment the sequence is: the last `context`
transitions seen (value slot = placeholder), the current observation, then `horizon` planned
transitions. The search starts, as published, from `beam_width` copies of the context, so the
first transition is sampled `beam_width x n_expand` times. Every planned transition: each beam is
expanded `n_expand` times, its action tokens are sampled (probability-mass rule `action_cdf`, or
`action_top_k`), reward and value tokens are taken greedily, candidates are scored, duplicates
dropped (`distinct_candidates`; the published code keeps them), the best `beam_width` kept, and
the next observation is decoded greedily (`observation_top_k` = 1). The first action of the best
sequence is executed, decoded with the discretizer's reconstruction.

Scores (`mode`), for a candidate whose last planned transition is t (s_t, a_t, r_t, V_t):
- `reward`: sum_{i<=t} discount^i E[r_i] + discount^(t+1) E[V_t], expectations over the
  reconstruction table. With a learned critic (TT+Q) the model's value token is replaced,
  as `critic_score` says:
  - `q`: sum_{i<t} discount^i E[r_i] + discount^t Q(s_t, a_t). Q already counts the reward of
    (s_t, a_t), so the model's predicted r_t is left out of the last term; the critic judges the
    very action being chosen, which is what separates the candidates of one beam.
  - `v`: sum_{i<=t} discount^i E[r_i] + discount^(t+1) V(s_{t+1}), with s_{t+1} decoded greedily
    for every candidate before selection (N more tokens per candidate rather than per kept beam).
  Both critics are IQL's (published system §6): Q = min(Q1, Q2), in the units of its shifted rewards.
- `likelihood`: the log-probability of every generated token (ours for imitation; with a
  goal-conditioned model the goal sits at the start of the sequence: goal reaching, and a
  map-conditioned model reads its map as context). Action tokens are still sampled under the
  mass rule and whole transitions are ranked.
- `beam`: the paper's imitation search (`token_beam_search`): deterministic, token by token;
  every beam is extended by every bin token, and the `beam_width` sequences of highest total
  log-probability are kept. No sampling, no reward, no value.

Window policy. The published planner crops its input to the last `context` transitions before
every forward pass. With rotary positions we apply that window to every query (sliding-window
attention: token p sees keys from `window_start(p)` on), so cached keys stay valid as the window
slides and nothing is re-encoded. Two decoders implement the same policy:
- `FullDecoder`: no cache, the whole sequence through `model.forward` for every token (the oracle,
  and the published algorithm: with learned positions, or `crop`, the window is cropped and re-encoded;
  a goal-conditioned model always crops, so its distance to the goal prefix stays within the
  training window whatever the position scheme);
- `CachedDecoder` (rotary only): keys and values kept per layer at three levels, so nothing is
  copied per beam: the shared context (one per environment), the kept beams, and the fresh tokens
  of the current candidates (beam x expansion); beams are re-indexed only when kept. Value tokens
  are never attended, so their keys are never kept.

The value token's own forward pass only predicts the next observation, so it runs after selection,
for the kept beams alone (before it only for the V critic, which reads that observation).
"""

from dataclasses import dataclass
from typing import Annotated, Literal, Protocol

import torch

from trajectory_transformer.config import Count, Probability, Range
from trajectory_transformer.discretization import Discretizer
from trajectory_transformer.errors import PipelineError
from trajectory_transformer.model import TrajectoryTransformer, apply_rotary, rotary_tables, window_start


@dataclass
class PlannerSpec:
    """The `plan` section of params.yaml (published system §4 defaults)."""

    mode: Literal["reward", "likelihood", "beam"] = "reward"
    horizon: Count = 15
    beam_width: Count = 128
    n_expand: Count = 2
    # transitions of history before the current observation; a window of one transition cannot
    # see a value's own transition
    context: Annotated[int, Range(low=2)] = 5
    action_cdf: Probability | None = 0.6  # drop the least likely tokens holding this much mass
    action_top_k: Count | None = None  # or sample among the k most likely (the appendix: 20)
    observation_top_k: Count = 1
    discount: Probability = 0.99
    replan_every: Count = 1
    cached: bool = True
    critic_score: Literal["q", "v"] = "q"  # how a critic (TT+Q) scores candidates: see the module docstring
    distinct_candidates: bool = True  # drop duplicate candidates; false keeps them, as the published code does

    def check(self, model: TrajectoryTransformer, critic: "Critic | None" = None) -> None:
        config = model.config
        if critic is not None and self.mode != "reward":
            raise PipelineError("a critic scores reward-mode plans only: set plan.mode reward, or run without a critic")
        if self.cached and config.position_embedding != "rotary":
            raise PipelineError("params plan.cached needs a model trained with train.model.position_embedding: rotary "
                                "(learned positions must re-encode the window each step): set plan.cached false or retrain")
        if self.cached and (config.goal_length or config.map_shape):
            raise PipelineError("goal- and map-conditioned planning runs uncached: set plan.cached false "
                                "(for one dataset: datasets.<name>.plan.cached)")
        if config.position_embedding == "learned" and self.context > config.window:
            raise PipelineError(f"params plan.context {self.context} exceeds the model's window of {config.window} "
                                "transitions (learned positions): lower it or retrain with a longer sequence.window")
        if self.observation_top_k != 1:
            raise PipelineError("params plan.observation_top_k: only greedy observation decoding (1) is implemented")
        if self.replan_every > self.horizon:
            raise PipelineError(f"params plan.replan_every {self.replan_every} exceeds the horizon {self.horizon}")


# ---------------------------------------------------------------------------------------------
# Decoders: the same interface, with and without a cache


class FullDecoder:
    """No cache: every next-token distribution recomputes the whole visible sequence."""

    def __init__(self, model: TrajectoryTransformer, context: int, prefix: torch.Tensor, goal: torch.Tensor | None,
                 crop: bool = False, maps: torch.Tensor | None = None):
        self.model, self.context, self.goal = model, context, goal
        self.map_embedding = model.map_encoder(maps) if maps is not None else None  # once per search, not per token
        self.crop = crop or model.config.position_embedding == "learned" or model.config.goal_length > 0
        self.tokens = prefix[:, None, None, :]  # (E, R, X, L)

    @torch.inference_mode()
    def logits(self) -> torch.Tensor:
        """(E, R, X, V + 1) distribution of the next token of every candidate."""
        E, R, X, L = self.tokens.shape
        flat = self.tokens.reshape(E * R * X, L)
        goal = self.goal.repeat_interleave(R * X, dim=0) if self.goal is not None else None
        maps = self.map_embedding.repeat_interleave(R * X, dim=0) if self.map_embedding is not None else None
        if self.crop:  # the published crop: the last `context` transitions' worth of tokens, re-encoded
            start = window_start(L - 1, self.context, self.model.config.transition_dim)
            out = self.model(flat[:, start:], goal, map_embedding=maps)[:, -1]
        else:
            out = self.model(flat, goal, band=self.context, map_embedding=maps)[:, -1]
        return out.view(E, R, X, -1)

    def expand(self, n: int) -> None:
        self.tokens = self.tokens.expand(-1, -1, n, -1)

    def append(self, tokens: torch.Tensor) -> None:
        self.tokens = torch.cat([self.tokens, tokens[..., None]], dim=-1)

    def select(self, beam: torch.Tensor, expansion: torch.Tensor) -> None:
        env = torch.arange(beam.shape[0], device=beam.device)[:, None]
        self.tokens = self.tokens[env, beam, expansion][:, :, None, :]


class CachedDecoder:
    """Incremental decoding with keys and values at three levels (see the module docstring).

    Value tokens are never attended, so their keys are not kept. The beams' keys are rebuilt
    contiguous at each selection, with zeroed room for one more transition: the observation
    decoded next (one candidate per beam) writes its keys there, and a one-token step attends
    over the whole buffer with the unused slots masked: a batched matmul over a strided slice of
    a larger buffer measured twice as slow as over the contiguous buffer, and this product is the
    search's largest memory read. Expanded candidates (X > 1) keep their own keys in a small
    fresh buffer. Positions are Python ints, so bookkeeping never waits for the device."""

    def __init__(self, model: TrajectoryTransformer, context: int, prefix: torch.Tensor):
        if model.config.goal_length or model.config.map_shape:
            raise PipelineError("goal- and map-conditioned planning runs uncached: set plan.cached false")
        self.model, self.context = model, context
        config = model.config
        self.transition_dim, self.n_head = config.transition_dim, config.n_head
        self.head_dim = config.n_embd // config.n_head
        self.device = prefix.device
        E, P = prefix.shape
        self.shared, self._logits = self._encode_prefix(prefix)
        self.position = P
        # keys appended between two selections: one transition's but its value
        self.room = self.transition_dim - 1
        self.beams = [tuple(torch.zeros(E, 1, self.n_head, self.room, self.head_dim, device=self.device) for _ in "kv")
                      for _ in model.blocks]
        self.beam_first, self.beam_keys = P, 0
        self.fresh: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # (E, R, X, H, room, d) once expanded
        self.fresh_keys = 0
        self.rotations = torch.empty(0, device=self.device)

    def _slot(self, position: int) -> int:
        """Kept keys before `position`: every position but the value tokens."""
        return position - position // self.transition_dim

    def _window(self, position: int) -> int:
        return window_start(position, self.context, self.transition_dim)

    def _rotation(self, position: int) -> torch.Tensor:
        """RoPE's complex rotations at one position, (2, 1, head_dim / 2): the query's scaled by
        1 / sqrt(head_dim), the key's as they are; from a table grown by doubling."""
        if position >= len(self.rotations):
            rotations = rotary_tables(torch.arange(2 * position + 1, device=self.device), self.head_dim)
            self.rotations = torch.stack([rotations * self.head_dim ** -0.5, rotations], dim=1)[:, :, None, :]
        return self.rotations[position]

    def logits(self) -> torch.Tensor:
        return self._logits

    @torch.inference_mode()
    def _encode_prefix(self, prefix: torch.Tensor) -> tuple[list, torch.Tensor]:
        """One masked forward pass over the context; keeps its keys and values (shared by every
        beam) and returns them with the logits of its last token, (E, 1, 1, V + 1)."""
        model = self.model
        E, P = prefix.shape
        positions = torch.arange(P, device=self.device)
        rotations = rotary_tables(positions, self.head_dim)
        mask = model.visible(positions, positions, self.context)
        kept = ~model.is_value(positions)
        x = model.embed_tokens(prefix)
        shared = []
        for block in model.blocks:
            q, k, v = block.attn.split_heads(block.ln_1(x))
            q, k = apply_rotary(q, rotations), apply_rotary(k, rotations)
            shared.append((k[:, :, kept].contiguous(), v[:, :, kept].contiguous()))
            x = x + block.attn.attend(q, k, v, mask)
            x = x + block.mlp(block.ln_2(x))
        logits = model.logits_at(model.ln_f(x[:, -1:]), P - 1)
        return shared, logits.view(E, 1, 1, -1)

    def _attend(self, layer: int, q: torch.Tensor, window: int) -> torch.Tensor:
        """Attention of one query per candidate, q (E, R, X, H, d) already scaled, over the three
        levels; returns (E, R, X, H, d)."""
        E, R, X, H, d = q.shape
        first_shared = self._slot(window)
        shared = None
        if first_shared < self.shared[layer][0].shape[-2]:
            shared = tuple(t[..., first_shared:, :] for t in self.shared[layer])
        beam_k, beam_v = self.beams[layer]
        first_beam = self._slot(max(window, self.beam_first)) - self._slot(self.beam_first)
        fresh = tuple(t[..., : self.fresh_keys, :] for t in self.fresh[layer]) if self.fresh_keys else None
        scores = []
        if shared is not None:  # one matmul per environment and head: (R X) queries against the context
            per_env = q.reshape(E, R * X, H, d).transpose(1, 2) @ shared[0].transpose(-1, -2)
            scores.append(per_env.view(E, H, R, X, -1).permute(0, 2, 3, 1, 4))
        # per beam and head: its X candidates' queries against the whole buffer, unused slots masked
        per_beam = q.transpose(2, 3) @ beam_k.transpose(-1, -2)
        if first_beam:
            per_beam[..., :first_beam] = float("-inf")
        per_beam[..., self.beam_keys :] = float("-inf")
        scores.append(per_beam.transpose(2, 3))
        if fresh is not None:  # per candidate: a few keys, elementwise
            scores.append((q.unsqueeze(-2) * fresh[0]).sum(-1))
        weights = (torch.cat(scores, dim=-1) if len(scores) > 1 else scores[0]).softmax(dim=-1)
        parts = iter(weights.split([s.shape[-1] for s in scores], dim=-1))
        outputs = []
        if shared is not None:
            w = next(parts).permute(0, 3, 1, 2, 4).reshape(E, H, R * X, -1)
            outputs.append((w @ shared[1]).view(E, H, R, X, d).permute(0, 2, 3, 1, 4))
        outputs.append((next(parts).transpose(2, 3) @ beam_v).transpose(2, 3))
        if fresh is not None:
            outputs.append((next(parts).unsqueeze(-1) * fresh[1]).sum(-2))
        return sum(outputs[1:], outputs[0])

    @torch.inference_mode()
    def append(self, tokens: torch.Tensor) -> None:
        """Run one token (E, R, X) per candidate at the next position against everything cached."""
        model, position = self.model, self.position
        E, R, X = tokens.shape
        H, d = self.n_head, self.head_dim
        keep = position % self.transition_dim != self.transition_dim - 1
        # the token's own key joins its level before it attends
        slot = self.beam_keys if self.fresh is None else self.fresh_keys
        if keep and self.fresh is None:
            self.beam_keys += 1
        elif keep:
            self.fresh_keys += 1
        window = self._window(position)
        rotation = self._rotation(position)
        x = model.embed_tokens(tokens.reshape(-1, 1), position).view(E, R, X, -1)
        for layer, block in enumerate(model.blocks):
            qkv = block.attn.qkv(block.ln_1(x)).view(E, R, X, 3, H, d)
            # RoPE as the model computes it, on a view of the queries and keys (no copy); the query scaled
            pairs = torch.view_as_complex(qkv[..., :2, :, :].unflatten(-1, (-1, 2)))
            qk = torch.view_as_real(pairs * rotation).flatten(-2)
            if keep and self.fresh is None:  # one candidate per beam: the beam's own room
                k, v = self.beams[layer]
                k[..., slot, :], v[..., slot, :] = qk[:, :, 0, 1], qkv[:, :, 0, 2]
            elif keep:
                k, v = self.fresh[layer]
                k[..., slot, :], v[..., slot, :] = qk[..., 1, :, :], qkv[..., 2, :, :]
            y = self._attend(layer, qk[..., 0, :, :], window)
            x = x + block.attn.proj(y.reshape(E, R, X, -1))
            x = x + block.mlp(block.ln_2(x))
        self.position += 1
        hidden = model.ln_f(x).view(-1, 1, x.shape[-1])
        self._logits = model.logits_at(hidden, position).view(E, R, X, -1)

    def expand(self, n: int) -> None:
        """n candidates per beam from here on; with n > 1 their keys go to a fresh buffer."""
        E, R = self._logits.shape[:2]
        if n > 1:
            self.fresh = [tuple(torch.empty(E, R, n, self.n_head, self.room, self.head_dim, device=self.device) for _ in "kv")
                          for _ in self.model.blocks]
        self._logits = self._logits.expand(-1, -1, n, -1)

    def select(self, beam: torch.Tensor, expansion: torch.Tensor) -> None:
        """Keep candidates (beam, expansion) as the new beams: their parent's keys followed by
        their fresh ones, then zeroed room; keys no future query can see (left of the window)
        are dropped."""
        E, R = beam.shape
        first = max(self.beam_first, self._window(self.position))
        low = self._slot(first) - self._slot(self.beam_first)
        env = torch.arange(E, device=self.device)[:, None]
        parents = (env * self.beams[0][0].shape[1] + beam).flatten()  # rows of the flattened (E x beams) cache
        chosen = parents * self._logits.shape[2] + expansion.flatten()  # and of (E x beams x candidates)
        beams = []
        for layer, level in enumerate(self.beams):
            kept = []
            for old, fresh in zip(level, self.fresh[layer] if self.fresh else (None, None)):
                pieces = [old[..., low : self.beam_keys, :].flatten(0, 1).index_select(0, parents)]
                if fresh is not None:
                    pieces.append(fresh[..., : self.fresh_keys, :].flatten(0, 2).index_select(0, chosen))
                pieces.append(old.new_zeros(E * R, self.n_head, self.room, self.head_dim))
                kept.append(torch.cat(pieces, dim=-2).unflatten(0, (E, R)))
            beams.append(tuple(kept))
        self.beams, self.beam_first = beams, first
        self.beam_keys = self.beam_keys - low + self.fresh_keys
        self.fresh, self.fresh_keys = None, 0
        self._logits = self._logits[env, beam, expansion][:, :, None, :]


# ---------------------------------------------------------------------------------------------
# Sampling


def filter_logits(logits: torch.Tensor, cdf: float | None, top_k: int | None) -> torch.Tensor:
    """Restrict sampling: drop the least likely tokens that together hold `cdf` of the mass
    (never the most likely one), or keep only the `top_k` most likely."""
    if top_k is not None:
        threshold = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        return logits.masked_fill(logits < threshold, float("-inf"))
    if cdf is not None and cdf > 0:
        probs = logits.softmax(dim=-1)
        ascending, order = probs.sort(dim=-1)
        dropped = ascending.cumsum(dim=-1) < cdf
        dropped[..., -1] = False
        drop = torch.zeros_like(dropped).scatter(-1, order, dropped)
        return logits.masked_fill(drop, float("-inf"))
    return logits


def sample(logits: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling with given uniforms, so tiny differences in logits (cached against
    uncached) do not change the draw unless it falls on a boundary."""
    cumulative = logits.softmax(dim=-1).cumsum(dim=-1)
    return torch.searchsorted(cumulative, uniform[..., None].contiguous()).clamp(max=logits.shape[-1] - 1)[..., 0]


# ---------------------------------------------------------------------------------------------
# The search


@dataclass
class Plan:
    actions: torch.Tensor  # (E, H, M) action tokens of the best sequence of each environment
    scores: torch.Tensor  # (E,) its score
    token_log_probs: torch.Tensor  # (E, tokens) log-probability of each generated token of it


class Critic(Protocol):
    """What TT+Q needs of a learned critic, on decoded (not tokenized) inputs."""

    def q(self, observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor: ...

    def v(self, observations: torch.Tensor) -> torch.Tensor: ...


# inference mode rather than no_grad (here and in the decoders): no version counters or view
# tracking on the tens of thousands of small operations of a search, 6 % faster per call
@torch.inference_mode()
def plan(
    model: TrajectoryTransformer,
    discretizer: Discretizer,
    spec: PlannerSpec,
    prefix: torch.Tensor,
    generator: torch.Generator,
    goal: torch.Tensor | None = None,
    critic: Critic | None = None,
    maps: torch.Tensor | None = None,
) -> Plan:
    """Plan for E environments. `prefix` (E, P): the context tokens (transitions, then the
    current observation), transition-aligned. `goal` (E, G): goal tokens of a goal-conditioned
    model; `maps` (E, H, W): the map of a map-conditioned one. `critic` replaces the value token (TT+Q)."""
    config = model.config
    N, M, V = config.observation_dim, config.action_dim, config.n_bins
    device = prefix.device
    E = prefix.shape[0]
    if (goal is None) != (config.goal_length == 0) or (maps is None) != (not config.map_shape):
        raise PipelineError("the model's goal prefix and map context must be given exactly when it was trained with them")
    decoder = CachedDecoder(model, spec.context, prefix) if spec.cached else FullDecoder(model, spec.context, prefix, goal, maps=maps)
    if spec.mode == "beam":
        return token_beam_search(decoder, config, spec)
    table = torch.as_tensor(discretizer.table, dtype=torch.float32, device=device)  # (D, V)
    reward_dim, value_dim = N + M, N + M + 1
    discounts = spec.discount ** torch.arange(spec.horizon + 1, device=device, dtype=torch.float32)
    critic_q = critic is not None and spec.critic_score == "q"
    critic_v = critic is not None and spec.critic_score == "v"

    R = 1
    padding = torch.zeros(E, 1, dtype=torch.bool, device=device)  # beams kept only to fill a row: no children
    returns = torch.zeros(E, 1, device=device)  # discounted expected rewards so far
    log_likelihood = torch.zeros(E, 1, device=device)
    generated = torch.zeros(E, 1, 1, 0, dtype=torch.long, device=device)  # all planned tokens
    token_log_probs = torch.zeros(E, 1, 1, 0, device=device)
    observation = prefix[:, None, -N:]  # (E, R, N) tokens of the current planned state

    def step(tokens: torch.Tensor, logits: torch.Tensor, append: bool = True):
        nonlocal generated, token_log_probs
        log_probs = logits.log_softmax(dim=-1).gather(-1, tokens[..., None])[..., 0]
        generated = torch.cat([generated.expand(*tokens.shape, -1), tokens[..., None]], dim=-1)
        token_log_probs = torch.cat([token_log_probs.expand(*tokens.shape, -1), log_probs[..., None]], dim=-1)
        if append:
            decoder.append(tokens)
        return log_probs

    def decode_observation(likelihood: torch.Tensor) -> torch.Tensor:
        """Greedy observation tokens (E, R, X, N) of every current candidate."""
        tokens = []
        for _ in range(N):
            logits = decoder.logits()[..., :V]
            tokens.append(logits.argmax(dim=-1))
            likelihood += step(tokens[-1], logits)
        return torch.stack(tokens, dim=-1)

    for t in range(spec.horizon):
        # the published search starts from beam_width copies of the context, each expanded
        # n_expand times: that many independent samples of the first transition
        X = spec.n_expand * (spec.beam_width if t == 0 else 1)
        decoder.expand(X)
        step_likelihood = torch.zeros(E, R, X, device=device)
        action_tokens = []
        for _ in range(M):
            logits = decoder.logits()[..., :V]
            tokens = sample(filter_logits(logits, spec.action_cdf, spec.action_top_k),
                            torch.rand(E, R, X, generator=generator, device=device))
            step_likelihood += step(tokens, logits)
            action_tokens.append(tokens)
        reward_logits = decoder.logits()[..., :V]
        reward = reward_logits.softmax(dim=-1) @ table[reward_dim]
        step_likelihood += step(reward_logits.argmax(dim=-1), reward_logits)
        value_logits = decoder.logits()[..., :V]
        value = value_logits.softmax(dim=-1) @ table[value_dim]
        # the value token's own forward pass predicts the next observation: needed before
        # selection only by the V critic, otherwise run after it, for the kept beams alone
        value_tokens = value_logits.argmax(dim=-1)
        step_likelihood += step(value_tokens, value_logits, append=critic_v)
        actions = torch.stack(action_tokens, dim=-1)  # (E, R, X, M)

        candidate_returns = returns[..., None] + discounts[t] * reward
        if critic_v:
            next_observation = decode_observation(step_likelihood)
            value = critic.v(discretizer_decode(table, next_observation, 0))
        candidate_likelihood = log_likelihood[..., None] + step_likelihood
        if spec.mode == "likelihood":
            scores = candidate_likelihood
        elif critic_q:
            states = discretizer_decode(table, observation[:, :, None, :].expand(E, R, X, N), 0)
            scores = returns[..., None] + discounts[t] * critic.q(states, discretizer_decode(table, actions, N))
        else:
            scores = candidate_returns + discounts[t + 1] * value
        scores = scores.reshape(E, R * X)
        if spec.distinct_candidates:
            # identical candidates plan identical futures: keep one of each. Kept beams are
            # distinct (padding aside), so a candidate is its (beam, action tokens), compared exactly
            scores = scores.masked_fill(padding[:, :, None].expand(E, R, X).reshape(E, R * X), float("-inf"))
            parents = torch.arange(R, device=device)[None, :, None].expand(E, R, X).reshape(E, R * X)
            scores = drop_duplicates(scores, parents, actions.reshape(E, R * X, M))
            # a sharp model makes most candidates duplicates: carry only as many beams as any
            # environment has distinct candidates (one host sync per planned transition)
            keep = min(spec.beam_width, int(torch.isfinite(scores).sum(dim=-1).max()))
        else:
            keep = min(spec.beam_width, R * X)
        scores, index = scores.topk(keep, dim=-1)
        padding = ~torch.isfinite(scores)
        beam, expansion = index // X, index % X
        env = torch.arange(E, device=device)[:, None]
        decoder.select(beam, expansion)
        returns = candidate_returns[env, beam, expansion]
        log_likelihood = candidate_likelihood[env, beam, expansion]
        generated = generated[env, beam, expansion][:, :, None]
        token_log_probs = token_log_probs[env, beam, expansion][:, :, None]
        R = keep
        if critic_v:
            observation = next_observation[env, beam, expansion]
        elif t < spec.horizon - 1:
            decoder.append(value_tokens[env, beam, expansion][:, :, None])
            observation = decode_observation(log_likelihood[..., None])[:, :, 0]

    best = scores.argmax(dim=-1)
    env = torch.arange(E, device=device)
    sequence = generated[env, best, 0]
    D = config.transition_dim
    planned = sequence.view(E, -1)
    actions = torch.stack([planned[:, t * D : t * D + M] for t in range(spec.horizon)], dim=1)
    return Plan(actions=actions, scores=scores[env, best], token_log_probs=token_log_probs[env, best, 0])


def token_beam_search(decoder, config, spec: PlannerSpec) -> Plan:
    """The published likelihood search: per token, every beam times every bin token, keep the
    `beam_width` of highest cumulative log-probability (the termination token is never planned)."""
    V, M, D = config.n_bins, config.action_dim, config.transition_dim
    E = decoder.logits().shape[0]
    device = decoder.logits().device
    env = torch.arange(E, device=device)[:, None]
    cumulative = torch.zeros(E, 1, device=device)
    generated = torch.zeros(E, 1, 0, dtype=torch.long, device=device)
    token_log_probs = torch.zeros(E, 1, 0, device=device)
    for _ in range(spec.horizon * D - (D - M)):  # through the last planned transition's actions
        log_probs = decoder.logits()[:, :, 0].log_softmax(dim=-1)[..., :V]  # (E, R, V)
        candidates = (cumulative[..., None] + log_probs).flatten(1)
        cumulative, index = candidates.topk(min(spec.beam_width, candidates.shape[1]), dim=-1)
        beam, token = index // V, index % V
        decoder.select(beam, torch.zeros_like(beam))
        decoder.append(token[..., None])
        generated = torch.cat([generated[env, beam], token[..., None]], dim=-1)
        token_log_probs = torch.cat([token_log_probs[env, beam], log_probs[env, beam, token][..., None]], dim=-1)
    best = torch.arange(E, device=device)  # topk sorts: the first beam is the most likely
    sequence = torch.cat([generated[best, 0], generated.new_zeros(E, D - M)], dim=-1).view(E, spec.horizon, D)
    return Plan(actions=sequence[..., :M], scores=cumulative[:, 0], token_log_probs=token_log_probs[best, 0])


def discretizer_decode(table: torch.Tensor, tokens: torch.Tensor, first_dim: int) -> torch.Tensor:
    dims = torch.arange(first_dim, first_dim + tokens.shape[-1], device=tokens.device)
    return table[dims, tokens.clamp(max=table.shape[1] - 1)]


def drop_duplicates(scores: torch.Tensor, parents: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """-inf for every candidate (E, C) whose parent beam (E, C) and action tokens (E, C, M)
    both equal an earlier candidate's in its environment's row."""
    same = (parents[:, :, None] == parents[:, None, :]) & (actions[:, :, None, :] == actions[:, None, :, :]).all(-1)
    earlier = torch.ones(parents.shape[1], parents.shape[1], dtype=torch.bool, device=parents.device).tril(-1)
    duplicate = (same & earlier).any(dim=-1)
    return scores.masked_fill(duplicate, float("-inf"))
