# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""RoutingConfig and KMeansConfig: what routing heads do, declared once.

`RoutingAttention` takes a `RoutingConfig` as its `config` attribute, and
`ModelConfig.routing` is the same object, so a user importing the module and
a user writing an experiment config set the same fields with the same
names and defaults (`config.model.routing.window`,
`RoutingAttention(..., config=RoutingConfig(window=...))`). Both are frozen,
jax-free (experiment configs import them) and validated on construction;
every error names the field and the rule.
"""

import dataclasses
from typing import Any, Optional

from routing_jax import config_sections

from routing_jax.nn.modes import (
    ATTENTION_POSITIONS,
    ROUTING_IMPLEMENTATIONS,
    ROUTINGS,
    WARMUPS,
)


def _check(cond: bool, prefix: str, field: str, value: Any, rule: str):
  if not cond:
    raise ValueError(f"{prefix}{field}={value!r}: {rule}")


@dataclasses.dataclass(frozen=True)
class KMeansConfig:
  """The online k-means of a routing layer (centroids are an EMA, not
  trained by gradients).

  Attributes:
    decay: EMA decay of the centroid counts and sums.
    epsilon: added to counts before dividing (empty clusters).
    commitment_weight: beta, the weight of the commitment loss that pulls
      routing vectors towards their centroids.
    prior_count: a pseudo-count of the initial centroid in every cluster;
      None: 0 (the reference) for top-k routing, 1 for causal routing,
      whose argmax needs sane centroid norms.
    data_init: centroids from the first batch's vectors; None: on for
      causal routing, off (the reference) for top-k.
    revive_threshold: clusters whose share of the batch falls below this
      fraction of 1/k are moved onto badly served vectors; None: 0.05 for
      causal routing, 0 (off, the reference) for top-k.
  """

  decay: float = 0.999
  epsilon: float = 1e-5
  commitment_weight: float = 1e-4
  prior_count: Optional[float] = None
  data_init: Optional[bool] = None
  revive_threshold: Optional[float] = None

  def __post_init__(self):
    self.validate()

  @classmethod
  def from_config(cls, config: Any, prefix: str = "kmeans.") -> "KMeansConfig":
    """From a ConfigDict / mapping; unknown keys are an error."""
    return config_sections.build(cls, config, "kmeans.", prefix)

  def validate(self, prefix: str = "kmeans.") -> None:
    need = lambda c, f, rule: _check(c, prefix, f, getattr(self, f), rule)
    need(0.0 <= self.decay < 1.0, "decay", "must be in [0, 1)")
    need(self.epsilon > 0.0, "epsilon", "must be > 0")
    need(self.commitment_weight >= 0.0, "commitment_weight", "must be >= 0")
    need(
        self.prior_count is None or self.prior_count >= 0.0,
        "prior_count",
        "must be None or >= 0",
    )
    need(
        self.revive_threshold is None or 0.0 <= self.revive_threshold < 1.0,
        "revive_threshold",
        "must be None or in [0, 1)",
    )

  def resolved(self, causal_routing: bool) -> "KMeansConfig":
    """A copy with the routing mode's defaults in place of None."""
    pick = lambda value, causal, topk: (
        value if value is not None else causal if causal_routing else topk
    )
    return dataclasses.replace(
        self,
        prior_count=pick(self.prior_count, 1.0, 0.0),
        data_init=pick(self.data_init, True, False),
        revive_threshold=pick(self.revive_threshold, 0.05, 0.0),
    )


@dataclasses.dataclass(frozen=True)
class RoutingConfig:
  """How routing heads pick the keys each query sees.

  Attributes:
    num_clusters: k centroids per head.
    window: w: members a causal query looks back over in its cluster, or
      tokens per cluster (topk).
    mode: "causal" (exactly causal: each query sees the last `window`
      earlier members of its cluster) or "topk" (the paper's balanced
      selection: each centroid takes its `window` nearest tokens).
    share_qk: keys are the queries (the paper's default). With separate Q
      and K, queries are clustered by their own vectors and keys by theirs
      (one shared set of centroids).
    fit_queries: with separate Q/K, the centroids learn from queries and
      keys (True, the paper's code) or from the keys alone (False): each
      query then goes to the key cluster its vector matches best, a maximum
      inner product search. None: False for causal routing (it retrieved
      better in benchmarks/long_range.py), True for topk.
    exclude_self: (causal) a query never attends to its own token's key; a
      query with no other visible key outputs 0. Under shared Q/K a token's
      own logit is the largest possible (LN(q)·LN(q) = d), so without it
      routing heads tend to attend to themselves.
    warmup_steps: (causal attention, either mode) until the k-means state
      has taken this many updates, the heads do `warmup` instead of
      routing, while the k-means runs as usual: routing can only bring a
      query and the key it needs together once their vectors agree, and
      they learn to agree only when they see each other
      (docs/causal_routing.md, "Why warm up").
    warmup: "dense": attend to every earlier token (or to the last
      `warmup_window`); O(n·d) memory, O(n²·d) compute. "random": causal
      routing over clusters drawn uniformly at random each step (about one
      per `window` tokens), a routed step's cost (causal mode only).
    warmup_window: the dense warm-up's sliding window; 0: the whole
      sequence.
    logit_scale: multiplies LN(q)·LN(k); 1.0 is the reference.
    position: the routing heads' positions, one of "none", "relative"
      (Shaw embeddings by the distance between members of a cluster, the
      paper's) or "rope" (rotates the normalised q, k for the logits;
      clustering stays content-based). None: what the model's other heads
      use (`ModelConfig.position`; "none" for images' learned2d), or
      "none" for a `RoutingAttention` on its own.
    implementation: "xla" or "pallas": the causal core of training, eval
      and prefill as XLA ops or as the fused kernels of `routing_kernel`
      (GPU; the Pallas interpreter on CPU); same outputs and gradients.
      "pallas" covers causal mode without relative positions or attention
      dropout.
    kernel_block_sizes: (block_q, block_k) of the Pallas kernels.
    kmeans: the k-means settings.
  """

  num_clusters: int = 4
  window: int = 64
  mode: str = "causal"
  share_qk: bool = True
  fit_queries: Optional[bool] = None
  exclude_self: bool = False
  warmup_steps: int = 0
  warmup: str = "dense"
  warmup_window: int = 0
  logit_scale: float = 1.0
  position: Optional[str] = None
  implementation: str = "xla"
  kernel_block_sizes: tuple[int, int] = (64, 64)
  kmeans: KMeansConfig = KMeansConfig()

  def __post_init__(self):
    object.__setattr__(
        self, "kernel_block_sizes", tuple(self.kernel_block_sizes)
    )
    if not isinstance(self.kmeans, KMeansConfig):
      object.__setattr__(
          self,
          "kmeans",
          KMeansConfig.from_config(self.kmeans, "routing.kmeans."),
      )
    self.validate()

  @classmethod
  def from_config(
      cls, config: Any, prefix: str = "routing."
  ) -> "RoutingConfig":
    """From a ConfigDict / mapping (kmeans nested); unknown keys are an
    error."""
    return config_sections.build(cls, config, "routing.", prefix)

  def replace(self, **kw) -> "RoutingConfig":
    return dataclasses.replace(self, **kw)

  @property
  def fits_queries(self) -> bool:
    """fit_queries with its mode default resolved."""
    if self.fit_queries is not None:
      return self.fit_queries
    return self.mode != "causal"

  def resolved_kmeans(self) -> KMeansConfig:
    return self.kmeans.resolved(self.mode == "causal")

  def validate(
      self, prefix: str = "routing.", causal: Optional[bool] = None
  ) -> None:
    """Checks the fields; `causal` (the attention's masking) adds the
    checks that need it."""
    need = lambda c, f, rule: _check(c, prefix, f, getattr(self, f), rule)
    need(self.mode in ROUTINGS, "mode", f"must be one of {ROUTINGS}")
    need(self.num_clusters >= 1, "num_clusters", "must be >= 1")
    need(self.window >= 1, "window", "must be >= 1")
    need(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
    need(self.warmup in WARMUPS, "warmup", f"must be one of {WARMUPS}")
    need(
        self.warmup_window >= 0,
        "warmup_window",
        "must be >= 0 (0: the whole sequence)",
    )
    need(
        self.warmup == "dense" or self.mode == "causal",
        "warmup",
        '"random" needs mode="causal"',
    )
    need(
        self.warmup == "dense" or not self.warmup_window,
        "warmup_window",
        'applies to warmup="dense" only (a random warm-up sees about'
        " `window` tokens)",
    )
    need(
        not (self.exclude_self and self.mode == "topk"),
        "exclude_self",
        'applies to mode="causal" only (top-k routing has no such mask)',
    )
    need(self.logit_scale > 0.0, "logit_scale", "must be > 0")
    need(
        self.position in (None,) + ATTENTION_POSITIONS,
        "position",
        f"must be None or one of {ATTENTION_POSITIONS}",
    )
    need(
        self.implementation in ROUTING_IMPLEMENTATIONS,
        "implementation",
        f"must be one of {ROUTING_IMPLEMENTATIONS}",
    )
    need(
        len(self.kernel_block_sizes) == 2 and min(self.kernel_block_sizes) >= 1,
        "kernel_block_sizes",
        "must be (block_q, block_k), both >= 1",
    )
    if self.implementation == "pallas":
      need(
          self.mode == "causal",
          "mode",
          'implementation="pallas" (the fused kernel) needs mode="causal"',
      )
    if causal is False:
      need(
          self.mode != "causal",
          "mode",
          '"causal" needs causal attention; use mode="topk" for'
          " bidirectional attention",
      )
      need(
          not self.warmup_steps,
          "warmup_steps",
          "needs causal attention (the warm-up is causal attention)",
      )
    self.kmeans.validate(prefix + "kmeans.")
