# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The KMeans module: the k-means state of routing attention and its update.

The centroids are updated by an exponential moving average of cluster counts
and sums (the paper's online k-means), never by gradients. They live in the
non-trainable variable collection "kmeans", in float32:

  centroids    [heads, clusters, head_dim]  what routing uses
  ema_count    [heads, clusters]            EMA of assignment counts
  ema_sums     [heads, clusters, head_dim]  EMA of assigned vector sums
  num_updates  [heads]                      updates so far

The arithmetic is in kmeans_ops.py. A call either writes the update
(when "kmeans" is mutable) or, when only the "kmeans_stats" collection is
mutable, leaves the state alone and writes the batch's statistics there, so
a train step can sum them over microbatches and update once
(kmeans_ops.merge_statistics / apply_statistics).
"""

from typing import Any, NamedTuple, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from routing_jax.common_types import Array
from routing_jax.nn import kmeans_ops as ops

KMEANS_COLLECTION = "kmeans"
STATS_COLLECTION = "kmeans_stats"
AUX_LOSS_COLLECTION = "aux_loss"

# The pure functions most callers need, under their old names.
normalize = ops.normalize
scores = ops.scores
assign = ops.assign
init_centroids = ops.init_centroids


class KMeansOutput(NamedTuple):
  scores: Array  # [batch, heads, length, clusters], with the old centroids
  assignments: Array  # [batch, heads, length] int32 argmax
  loss: Array  # scalar: commitment_weight · commitment loss
  stats: dict[str, Any]  # cluster health of this batch


class KMeans(nn.Module):
  """Centroid state and its EMA update, in the "kmeans" collection.

  Calling it scores routing vectors against the *current* centroids and, when
  `update=True`, the caller made "kmeans" mutable and this is not `init`,
  writes the EMA update afterwards: a step's routing never sees its own
  update. With "kmeans_stats" mutable instead, the update's statistics are
  written there and the state is left alone (see the module docstring).
  `route_many` does the same for several sets of vectors (queries and keys
  clustered separately): all are scored with the old centroids, then the
  EMA runs once per set, in order, as the paper's code does.

  Attributes:
    num_heads: routing heads h.
    num_clusters: k.
    head_dim: d.
    decay: EMA decay λ (the reference's 0.999).
    epsilon: Laplace smoothing ε of the counts.
    commitment_weight: β of the commitment loss.
    prior_count: initial value of every EMA count. 0 is the reference: the
      first update then divides by tiny smoothed counts, so centroids of
      small or empty clusters get huge norms for thousands of steps. Per-
      centroid top-k ("topk" routing) is scale invariant and does not care,
      but argmax assignment does: large-norm centroids win every token.
      1 makes the state a proper running mean with one pseudo-observation
      at the initial centroid, so norms stay ≈ √d from the first step.
    data_init: at the first update, replace the random initial centroids by
      routing vectors drawn from that batch (then update as usual).
    revive_threshold: after every update, a cluster whose EMA count is below
      this fraction of the mean count is re-seeded from the batch's
      worst-served routing vector (0 disables; the reference has none).
  """

  num_heads: int
  num_clusters: int
  head_dim: int
  decay: float = 0.999
  epsilon: float = 1e-5
  commitment_weight: float = 1e-4
  prior_count: float = 0.0
  data_init: bool = False
  revive_threshold: float = 0.0

  def setup(self):
    if self.num_clusters < 1:
      raise ValueError(f"num_clusters must be >= 1, got {self.num_clusters}")
    if self.prior_count < 0:
      raise ValueError(f"prior_count must be >= 0, got {self.prior_count}")
    if not 0.0 <= self.decay < 1.0:
      raise ValueError(f"decay must be in [0, 1), got {self.decay}")
    if not 0.0 <= self.revive_threshold < 0.5:
      raise ValueError(
          f"revive_threshold must be in [0, 0.5), got {self.revive_threshold}"
      )
    axes = ("heads", "clusters", "kv")
    shape = (self.num_heads, self.num_clusters, self.head_dim)

    def init_means():
      key = (
          self.make_rng("params")
          if self.has_rng("params")
          else (jax.random.key(0))
      )
      return ops.init_centroids(key, *shape)

    boxed = lambda f, names: nn.with_logical_partitioning(f, names)()
    self.centroids = self.variable(
        KMEANS_COLLECTION, "centroids", boxed, init_means, axes
    )
    self.ema_count = self.variable(
        KMEANS_COLLECTION,
        "ema_count",
        boxed,
        lambda: jnp.full(shape[:2], self.prior_count, jnp.float32),
        axes[:2],
    )
    # The reference initialises the EMA sums to the initial centroids (with
    # prior_count > 0 they are the prior's sums, prior_count · μ0).
    self.ema_sums = self.variable(
        KMEANS_COLLECTION,
        "ema_sums",
        boxed,
        lambda: jnp.asarray(nn.unbox(self.centroids.value))
        * (self.prior_count if self.prior_count > 0 else 1.0),
        axes,
    )
    self.num_updates = self.variable(
        KMEANS_COLLECTION,
        "num_updates",
        boxed,
        lambda: jnp.zeros(shape[:1], jnp.int32),
        axes[:1],
    )

  def current(self) -> Array:
    """The centroids [heads, clusters, head_dim] (float32), no gradient."""
    return jax.lax.stop_gradient(nn.unbox(self.centroids.value))

  def __call__(
      self, x: Array, mask: Optional[Array] = None, update: bool = False
  ) -> KMeansOutput:
    """Scores and assigns x, then (maybe) updates the EMA state.

    Args:
      x: [batch, length, heads, head_dim] routing vectors (normalised).
      mask: optional [batch, length] bool, False at padding.
      update: request the EMA update (train mode).

    Returns:
      KMeansOutput computed with the centroids from before any update.
    """
    return self.route_many((x,), mask, update)[0]

  def route_many(
      self,
      xs: Sequence[Array],
      mask: Optional[Array] = None,
      update: bool = False,
      fit: Optional[Sequence[bool]] = None,
  ) -> list[KMeansOutput]:
    """Scores and assigns each of `xs`; then one EMA update per set, in order.

    Args:
      xs: routing vector sets, each [batch, length, heads, head_dim].
      mask: optional [batch, length] bool shared by all sets.
      update: request the EMA update (train mode).
      fit: which sets the EMA learns from (default: all); the others are
        only scored and assigned.

    Returns:
      One KMeansOutput per set, all from the centroids before any update.
    """
    fit = tuple(fit) if fit is not None else (True,) * len(xs)
    if len(fit) != len(xs) or not any(fit):
      raise ValueError(
          f"fit must name at least one of {len(xs)} sets, got {fit}"
      )
    mu = self.current()
    outs = []
    for x in xs:
      s = ops.scores(x, mu)
      a = jnp.argmax(s, axis=-1).astype(jnp.int32)
      loss = self.commitment_weight * ops.commitment_loss(x, mu, a, mask)
      counts, _ = ops.batch_statistics(x, a, self.num_clusters, mask)
      outs.append(KMeansOutput(s, a, loss, ops.cluster_health(counts)))
    writes = self.is_mutable_collection(KMEANS_COLLECTION)
    defers = self.is_mutable_collection(STATS_COLLECTION)
    if update and (writes or defers) and not self.is_initializing():
      keep = [i for i, f in enumerate(fit) if f]
      stats = ops.statistics(
          [xs[i] for i in keep],
          outs[keep[0]].scores,
          mask,
          self.num_clusters,
          [outs[i].assignments for i in keep],
      )
      if writes:
        self._write(ops.apply_statistics(self.state(), stats, self.settings()))
      else:
        for name, value in stats.items():
          self.put_variable(STATS_COLLECTION, name, value)
    return outs

  def settings(self) -> ops.Settings:
    return ops.Settings(
        self.decay,
        self.epsilon,
        self.prior_count,
        self.data_init,
        self.revive_threshold,
    )

  def state(self) -> dict[str, Array]:
    """The state as plain arrays (centroids without gradient)."""
    return {
        "centroids": self.current(),
        "ema_count": nn.unbox(self.ema_count.value),
        "ema_sums": nn.unbox(self.ema_sums.value),
        "num_updates": nn.unbox(self.num_updates.value),
    }

  def _write(self, new: dict[str, Array]) -> None:
    for name in ("centroids", "ema_count", "ema_sums", "num_updates"):
      var = getattr(self, name)
      var.value = _rebox(var.value, new[name])


def _rebox(old, new):
  """Keeps the LogicallyPartitioned box (if any) around an updated value."""
  if isinstance(old, nn.Partitioned):
    return old.replace_boxed(new)
  return new
