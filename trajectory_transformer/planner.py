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
slides and nothing is re-encoded. Three decoders, one `Decoder` interface (logits, append,
expand, select), are the cache policies:
- `FullDecoder`: no cache, the whole sequence through `model.forward` for every token (the oracle,
  and the published algorithm: with learned positions, or `crop`, the window is cropped and re-encoded;
  a goal-conditioned model always crops, so its distance to the goal prefix stays within the
  training window whatever the position scheme);
- `CachedDecoder` (rotary only): one `model.step` per token against the model's `BeamCache`,
  which keeps keys at three levels (the shared context, the kept beams, the fresh tokens of the
  current candidates), so nothing is copied per beam;
- `CroppedDecoder`: the published crop, cached between crops: one encoding of the crop per
  planned transition, then one-token steps (goal-conditioned planning; the analysis's Markovian
  rollouts). A goal prefix sits in the cache as keys every query sees, a map embedding as what
  every stepped token adds.

The search's state is one `Beams` object: the decoder and every per-candidate tensor, indexed
(environment, beam, expansion), so that `take` re-indexes all of them at once.

The value token's own forward pass only predicts the next observation, so it runs after selection,
for the kept beams alone (before it only for the V critic, which reads that observation).
"""

from dataclasses import dataclass
from typing import Annotated, Literal, Protocol

import torch

from trajectory_transformer.config import Count, Probability, Range
from trajectory_transformer.discretization import Discretizer
from trajectory_transformer.errors import PipelineError
from trajectory_transformer.model import BeamCache, TrajectoryTransformer


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
        if config.position_embedding == "learned" and self.context > config.window:
            raise PipelineError(f"params plan.context {self.context} exceeds the model's window of {config.window} "
                                "transitions (learned positions): lower it or retrain with a longer sequence.window")
        if self.observation_top_k != 1:
            raise PipelineError("params plan.observation_top_k: only greedy observation decoding (1) is implemented")
        if self.replan_every > self.horizon:
            raise PipelineError(f"params plan.replan_every {self.replan_every} exceeds the horizon {self.horizon}")


# ---------------------------------------------------------------------------------------------
# Decoders: one interface, three cache policies


def kept(tensor: torch.Tensor, beam: torch.Tensor, expansion: torch.Tensor) -> torch.Tensor:
    """The rows (E, R', 1, ...) of candidates (beam, expansion) of an (E, R, X, ...) tensor."""
    env = torch.arange(beam.shape[0], device=beam.device)[:, None]
    return tensor[env, beam, expansion][:, :, None]


class Decoder(Protocol):
    """Next-token distributions of every candidate (E environments, R beams, X expansions)."""

    def logits(self) -> torch.Tensor:
        """(E, R, X, V + 1) distribution of the next token of every candidate."""

    def append(self, tokens: torch.Tensor) -> None:
        """One more token (E, R, X) per candidate."""

    def expand(self, n: int) -> None:
        """n candidates per beam from here on."""

    def select(self, beam: torch.Tensor, expansion: torch.Tensor) -> None:
        """Keep candidates (beam, expansion), each (E, R'), as the new beams."""


class FullDecoder:
    """No cache: every next-token distribution recomputes the whole visible sequence (the oracle,
    and the published algorithm: with `crop`, learned positions or a goal prefix, the window is
    cropped and re-encoded, so a goal prefix stays within its training distance)."""

    def __init__(self, model: TrajectoryTransformer, context: int, prefix: torch.Tensor, goal: torch.Tensor | None = None,
                 crop: bool = False, maps: torch.Tensor | None = None):
        self.model, self.context, self.goal = model, context, goal
        self.map_embedding = model.map_encoder(maps) if maps is not None else None  # once per search, not per token
        self.crop = crop or model.config.position_embedding == "learned" or model.config.goal_length > 0
        self.tokens = prefix[:, None, None, :]  # (E, R, X, L)

    @torch.inference_mode()
    def logits(self) -> torch.Tensor:
        E, R, X, L = self.tokens.shape
        flat = self.tokens.reshape(E * R * X, L)
        goal = self.goal.repeat_interleave(R * X, dim=0) if self.goal is not None else None
        maps = self.map_embedding.repeat_interleave(R * X, dim=0) if self.map_embedding is not None else None
        if self.crop:
            out = self.model(self.model.crop(flat, self.context), goal, map_embedding=maps)[:, -1]
        else:
            out = self.model(flat, goal, context=self.context, map_embedding=maps)[:, -1]
        return out.view(E, R, X, -1)

    def expand(self, n: int) -> None:
        self.tokens = self.tokens.expand(-1, -1, n, -1)

    def append(self, tokens: torch.Tensor) -> None:
        self.tokens = torch.cat([self.tokens, tokens[..., None]], dim=-1)

    def select(self, beam: torch.Tensor, expansion: torch.Tensor) -> None:
        self.tokens = kept(self.tokens, beam, expansion)


class CachedDecoder:
    """Incremental decoding (rotary positions): the model's `BeamCache` keeps every key once, at
    the level where it is shared (goal prefix and context, kept beams, fresh candidates), under
    the sliding window."""

    def __init__(self, model: TrajectoryTransformer, context: int, prefix: torch.Tensor, goal: torch.Tensor | None = None,
                 map_embedding: torch.Tensor | None = None):
        self.model = model
        self.cache = BeamCache(model.config, context)
        self._logits = model.prefill(prefix, self.cache, goal, map_embedding)[:, None, None, :]

    def logits(self) -> torch.Tensor:
        return self._logits

    def append(self, tokens: torch.Tensor) -> None:
        self._logits = self.model.step(tokens, self.cache)

    def expand(self, n: int) -> None:
        self.cache.expand(n)
        self._logits = self._logits.expand(-1, -1, n, -1)

    def select(self, beam: torch.Tensor, expansion: torch.Tensor) -> None:
        self.cache.select(beam, expansion)
        self._logits = kept(self._logits, beam, expansion)


class CroppedDecoder:
    """The published crop, cached between crops: every token sees at most the last `context`
    transitions (and the goal prefix), each re-encoded from the crop. The crop moves once per
    transition (at the value slot), so the cache is rebuilt then, and after a selection (the
    crop's cache holds one row per candidate and is not re-indexed across them); an expansion of
    one candidate per beam expands that cache instead. Rebuilds wait until the next logits are
    asked for, so a transition's end and the selection after it cost one: per planned transition,
    one encoding of the crop and D - 1 one-token steps, against D encodings uncached."""

    def __init__(self, model: TrajectoryTransformer, context: int, prefix: torch.Tensor, goal: torch.Tensor | None = None,
                 map_embedding: torch.Tensor | None = None):
        self.model, self.context, self.goal, self.map_embedding = model, context, goal, map_embedding
        self.tokens = prefix[:, None, None, :]  # (E, R, X, L): the crop only, from a transition boundary
        self.stale = True

    def _encode(self) -> None:
        self.tokens = self.model.crop(self.tokens, self.context)
        E, R, X, L = self.tokens.shape
        per_row = [t.repeat_interleave(R * X, dim=0) if t is not None else None for t in (self.goal, self.map_embedding)]
        self.inner = CachedDecoder(self.model, self.context, self.tokens.reshape(-1, L), *per_row)
        self.stale = False

    def logits(self) -> torch.Tensor:
        if self.stale:
            self._encode()
        return self.inner.logits().view(*self.tokens.shape[:3], -1)

    def append(self, tokens: torch.Tensor) -> None:
        self.tokens = torch.cat([self.tokens, tokens[..., None]], dim=-1)
        if self.tokens.shape[-1] % self.model.config.transition_dim == 0:  # a value slot ended a transition
            self.stale = True
        elif not self.stale:
            self.inner.append(tokens.reshape(self.inner.logits().shape[:3]))

    def expand(self, n: int) -> None:
        if n == self.tokens.shape[2]:
            return
        if self.tokens.shape[2] == 1 and not self.stale:  # each row of the crop's cache is one beam
            self.inner.expand(n)
        else:
            self.stale = True
        self.tokens = self.tokens.expand(-1, -1, n, -1)

    def select(self, beam: torch.Tensor, expansion: torch.Tensor) -> None:
        self.tokens = kept(self.tokens, beam, expansion)
        self.stale = True


def make_decoder(model: TrajectoryTransformer, context: int, prefix: torch.Tensor, cached: bool, crop: bool = False,
                 goal: torch.Tensor | None = None, maps: torch.Tensor | None = None) -> Decoder:
    """The window policy `crop` (or sliding), with a cache when `cached` and the model has rotary
    positions (learned positions always re-encode, uncached). A goal-conditioned model always
    crops (`FullDecoder`), cached or not."""
    if not cached or model.config.position_embedding != "rotary":
        return FullDecoder(model, context, prefix, goal, crop=crop, maps=maps)
    map_embedding = model.map_encoder(maps) if maps is not None else None
    if crop or model.config.goal_length:
        return CroppedDecoder(model, context, prefix, goal, map_embedding)
    return CachedDecoder(model, context, prefix, goal, map_embedding)


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


class Beams:
    """The search's state: every tensor indexed (environment, beam, expansion) like the
    candidates, so `take` re-indexes all of them, and the decoder's keys, at once."""

    FIELDS = ("tokens", "log_probs", "returns", "likelihood", "observation")  # re-indexed by take; scores are set

    def __init__(self, decoder: Decoder, observation: torch.Tensor):
        E = observation.shape[0]
        self.decoder = decoder
        self.tokens = observation.new_zeros(E, 1, 1, 0)  # every planned token
        self.log_probs = torch.zeros(E, 1, 1, 0, device=observation.device)  # and its log-probability
        self.returns = torch.zeros(E, 1, 1, device=observation.device)  # discounted expected rewards so far
        self.likelihood = torch.zeros(E, 1, 1, device=observation.device)  # log-probability of the planned tokens
        self.observation = observation[:, None, None, :]  # (E, R, X, N) tokens of the last planned state
        self.scores = torch.zeros(E, 1, 1, device=observation.device)  # -inf: kept only to fill a row, no children

    @property
    def width(self) -> int:
        return self.tokens.shape[1]

    def expand(self, n: int) -> None:
        self.decoder.expand(n)
        for name in (*self.FIELDS, "scores"):
            field = getattr(self, name)
            setattr(self, name, field.expand(field.shape[0], field.shape[1], n, *field.shape[3:]))

    def push(self, tokens: torch.Tensor, logits: torch.Tensor, feed: bool = True) -> torch.Tensor:
        """Record one token (E, R, X) per candidate, and feed it to the decoder unless told not to;
        its log-probabilities under `logits`."""
        log_probs = logits.log_softmax(dim=-1).gather(-1, tokens[..., None])[..., 0]
        self.tokens = torch.cat([self.tokens, tokens[..., None]], dim=-1)
        self.log_probs = torch.cat([self.log_probs, log_probs[..., None]], dim=-1)
        if feed:
            self.decoder.append(tokens)
        return log_probs

    def feed_last(self) -> None:
        """Feed the decoder the last recorded token (one recorded with feed=False)."""
        self.decoder.append(self.tokens[..., -1])

    def take(self, index: torch.Tensor, scores: torch.Tensor) -> None:
        """Keep the candidates at flat `index` (E, K) (beam x expansion), with their `scores`."""
        X = self.tokens.shape[2]
        beam, expansion = index // X, index % X
        self.decoder.select(beam, expansion)
        for name in self.FIELDS:
            setattr(self, name, kept(getattr(self, name), beam, expansion))
        self.scores = scores[:, :, None]


# inference mode rather than no_grad (here, in FullDecoder.logits, model.prefill and model.step):
# no version counters or view tracking on the tens of thousands of small operations of a
# search, 6 % faster per call
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
    decoder = make_decoder(model, spec.context, prefix, spec.cached, goal=goal, maps=maps)
    if spec.mode == "beam":
        return token_beam_search(decoder, config, spec)
    table = torch.as_tensor(discretizer.table, dtype=torch.float32, device=device)  # (D, V)
    reward_dim, value_dim = N + M, N + M + 1
    discounts = spec.discount ** torch.arange(spec.horizon + 1, device=device, dtype=torch.float32)
    critic_q = critic is not None and spec.critic_score == "q"
    critic_v = critic is not None and spec.critic_score == "v"
    beams = Beams(decoder, prefix[:, -N:])

    def decode_observation(likelihood: torch.Tensor) -> torch.Tensor:
        """Greedy observation tokens (E, R, X, N) of every current candidate, their
        log-probabilities added to `likelihood`."""
        tokens = []
        for _ in range(N):
            logits = decoder.logits()[..., :V]
            tokens.append(logits.argmax(dim=-1))
            likelihood += beams.push(tokens[-1], logits)
        return torch.stack(tokens, dim=-1)

    for t in range(spec.horizon):
        # the published search starts from beam_width copies of the context, each expanded
        # n_expand times: that many independent samples of the first transition
        X = spec.n_expand * (spec.beam_width if t == 0 else 1)
        beams.expand(X)
        R = beams.width
        step_likelihood = torch.zeros(E, R, X, device=device)
        action_tokens = []
        for _ in range(M):
            logits = decoder.logits()[..., :V]
            tokens = sample(filter_logits(logits, spec.action_cdf, spec.action_top_k),
                            torch.rand(E, R, X, generator=generator, device=device))
            step_likelihood += beams.push(tokens, logits)
            action_tokens.append(tokens)
        reward_logits = decoder.logits()[..., :V]
        reward = reward_logits.softmax(dim=-1) @ table[reward_dim]
        step_likelihood += beams.push(reward_logits.argmax(dim=-1), reward_logits)
        value_logits = decoder.logits()[..., :V]
        value = value_logits.softmax(dim=-1) @ table[value_dim]
        # the value token's own forward pass predicts the next observation: needed before
        # selection only by the V critic, otherwise run after it, for the kept beams alone
        step_likelihood += beams.push(value_logits.argmax(dim=-1), value_logits, feed=critic_v)
        actions = torch.stack(action_tokens, dim=-1)  # (E, R, X, M)

        returns = beams.returns + discounts[t] * reward
        if critic_v:
            next_observation = decode_observation(step_likelihood)
            value = critic.v(discretizer_decode(table, next_observation, 0))
        likelihood = beams.likelihood + step_likelihood
        if spec.mode == "likelihood":
            scores = likelihood
        elif critic_q:
            states = discretizer_decode(table, beams.observation, 0)
            scores = beams.returns + discounts[t] * critic.q(states, discretizer_decode(table, actions, N))
        else:
            scores = returns + discounts[t + 1] * value
        scores = scores.reshape(E, R * X)
        if spec.distinct_candidates:
            # identical candidates plan identical futures: keep one of each. Kept beams are
            # distinct (padding aside), so a candidate is its (beam, action tokens), compared exactly
            scores = scores.masked_fill(~torch.isfinite(beams.scores).reshape(E, R * X), float("-inf"))
            parents = torch.arange(R, device=device)[None, :, None].expand(E, R, X).reshape(E, R * X)
            scores = drop_duplicates(scores, parents, actions.reshape(E, R * X, M))
            # a sharp model makes most candidates duplicates: carry only as many beams as any
            # environment has distinct candidates (one host sync per planned transition)
            keep = min(spec.beam_width, int(torch.isfinite(scores).sum(dim=-1).max()))
        else:
            keep = min(spec.beam_width, R * X)
        scores, index = scores.topk(keep, dim=-1)
        beams.returns, beams.likelihood = returns, likelihood
        if critic_v:
            beams.observation = next_observation
        beams.take(index, scores)
        if not critic_v and t < spec.horizon - 1:
            beams.feed_last()
            beams.observation = decode_observation(beams.likelihood)

    best = beams.scores[..., 0].argmax(dim=-1)
    env = torch.arange(E, device=device)
    D = config.transition_dim
    planned = beams.tokens[env, best, 0]
    actions = torch.stack([planned[:, t * D : t * D + M] for t in range(spec.horizon)], dim=1)
    return Plan(actions=actions, scores=beams.scores[env, best, 0], token_log_probs=beams.log_probs[env, best, 0])


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
