"""Online k-means for routing attention: pure functions and the KMeans module.

The centroids are updated by an exponential moving average of cluster counts
and sums (reference §1.2), never by gradients. They live in the non-trainable
variable collection "kmeans", in float32:

  centroids  [heads, clusters, head_dim]  what routing uses (the reference's
                                          `means`)
  ema_count  [heads, clusters]            EMA of assignment counts
  ema_sums   [heads, clusters, head_dim]  EMA of assigned vector sums

The update follows the reference code exactly: counts and sums are EMA'd with
decay λ, the counts get Laplace smoothing ε, and centroids = sums / counts, with
no zero-debiasing and no renormalisation. Statistics are sums over the whole
batch, so under `jax.jit` with a sharded batch they are global; when the
train step maps the model over data replicas (routing_jax/grad_accum.py),
`cross_replica` makes them sum over the replicas too.
"""

import contextlib
import contextvars
from typing import Any, NamedTuple, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

KMEANS_COLLECTION = "kmeans"
AUX_LOSS_COLLECTION = "aux_loss"
LN_EPSILON = 1e-6


# The vmapped axis name whose replicas share one batch, while tracing a
# per-replica train step; None otherwise.
_REPLICA_AXIS = contextvars.ContextVar("kmeans_replica_axis", default=None)


@contextlib.contextmanager
def cross_replica(axis_name: str):
  """While tracing inside, batch statistics sum over `axis_name` too."""
  token = _REPLICA_AXIS.set(axis_name)
  try:
    yield
  finally:
    _REPLICA_AXIS.reset(token)


def _replica_sum(x: Array) -> Array:
  axis = _REPLICA_AXIS.get()
  return x if axis is None else jax.lax.psum(x, axis)


def _top_rows(values: Array, rows: Array, num: int) -> Array:
  """Rows of the `num` largest values per head, over all replicas.

  values [h, m], rows [h, m, d] -> [h, num, d], largest first (ties: lower
  index, replicas in order), cycled when fewer than `num` exist.
  """
  take = min(num, values.shape[1])
  top, idx = jax.lax.top_k(values, take)
  picked = jnp.take_along_axis(rows, idx[..., None], axis=1)
  axis = _REPLICA_AXIS.get()
  if axis is not None:
    # The global top `num` lie among every replica's own top `num`.
    top = jax.lax.all_gather(top, axis, axis=1, tiled=True)
    picked = jax.lax.all_gather(picked, axis, axis=1, tiled=True)
    take = min(num, top.shape[1])
    _, idx = jax.lax.top_k(top, take)
    picked = jnp.take_along_axis(picked, idx[..., None], axis=1)
  return jnp.tile(picked, (1, -(-num // take), 1))[:, :num]


def normalize(x: Array, epsilon: float = LN_EPSILON) -> Array:
  """Parameter-free LayerNorm over the last axis, in float32.

  The result has zero mean and norm ≈ √d: a sphere of radius √d, as in the
  reference (not the unit sphere).
  """
  x = x.astype(jnp.float32)
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + epsilon)


def init_centroids(key: Array, num_heads: int, num_clusters: int,
                   head_dim: int) -> Array:
  """Standard normal draws, normalised like the routing vectors."""
  return normalize(
      jax.random.normal(key, (num_heads, num_clusters, head_dim), jnp.float32))


def scores(x: Array, centroids: Array) -> Array:
  """Inner products x·μ_c (maximum inner product, as the reference).

  Args:
    x: [batch, length, heads, head_dim] routing vectors.
    centroids: [heads, clusters, head_dim].

  Returns:
    [batch, heads, length, clusters] float32 scores.
  """
  return jnp.einsum("bnhd,hkd->bhnk", x.astype(jnp.float32),
                    centroids.astype(jnp.float32),
                    precision=jax.lax.Precision.HIGHEST)


def assign(x: Array, centroids: Array) -> Array:
  """Hard assignment argmax_c x·μ_c: [batch, heads, length] int32."""
  return jnp.argmax(scores(x, centroids), axis=-1).astype(jnp.int32)


class EMAState(NamedTuple):
  centroids: Array  # [heads, clusters, head_dim]
  ema_count: Array  # [heads, clusters]
  ema_sums: Array  # [heads, clusters, head_dim]


def batch_statistics(x: Array, assignments: Array, num_clusters: int,
                     mask: Optional[Array] = None) -> tuple[Array, Array]:
  """Per-cluster counts and vector sums over batch and length.

  Args:
    x: [batch, length, heads, head_dim] routing vectors (gradients stopped).
    assignments: [batch, heads, length] cluster ids.
    num_clusters: k.
    mask: optional [batch, length] bool, False for padding (not counted).

  Returns:
    counts [heads, clusters] and sums [heads, clusters, head_dim], float32.
  """
  onehot = jax.nn.one_hot(assignments, num_clusters, dtype=jnp.float32)
  if mask is not None:
    onehot = onehot * mask[:, None, :, None].astype(jnp.float32)
  counts = jnp.sum(onehot, axis=(0, 2))
  sums = jnp.einsum("bhnk,bnhd->hkd", onehot,
                    jax.lax.stop_gradient(x).astype(jnp.float32),
                    precision=jax.lax.Precision.HIGHEST)
  return _replica_sum(counts), _replica_sum(sums)


def ema_update(state: EMAState, counts: Array, sums: Array, decay: float,
               epsilon: float = 1e-5) -> EMAState:
  """One EMA step of the reference's online k-means (no debias, no renorm).

  ema_count ← λ·ema_count + (1−λ)·count,  ema_sums ← λ·ema_sums + (1−λ)·sum,
  smoothed_c = (ema_count_c + ε) / (N + k·ε) · N with N = Σ_c ema_count_c,
  centroids = ema_sums / smoothed.
  """
  ema_count = decay * state.ema_count + (1.0 - decay) * counts
  ema_sums = decay * state.ema_sums + (1.0 - decay) * sums
  k = ema_count.shape[-1]
  total = jnp.sum(ema_count, axis=-1, keepdims=True)
  smoothed = (ema_count + epsilon) / (total + k * epsilon) * total
  centroids = ema_sums / smoothed[..., None]
  return EMAState(centroids, ema_count, ema_sums)


def commitment_loss(x: Array, centroids: Array, assignments: Array,
                    mask: Optional[Array] = None) -> Array:
  """mean ‖x − sg(μ_assigned)‖² over all valid elements (b·h·n·d).

  Gradients reach x only: the centroids are EMA state.
  """
  mu = jax.lax.stop_gradient(centroids.astype(jnp.float32))
  # [heads, clusters, d] gathered by [batch, heads, length] -> [b, n, h, d]
  picked = jax.vmap(lambda m, a: m[a], in_axes=(0, 1), out_axes=2)(
      mu, assignments)
  sq = jnp.square(x.astype(jnp.float32) - picked)
  if mask is None:
    return _replica_sum(jnp.sum(sq)) / _replica_sum(jnp.float32(sq.size))
  w = mask[:, :, None, None].astype(jnp.float32)
  denom = jnp.maximum(_replica_sum(jnp.sum(w)) * sq.shape[2] * sq.shape[3],
                      1.0)
  return _replica_sum(jnp.sum(sq * w)) / denom


def cluster_health(counts: Array) -> dict[str, Array]:
  """Cluster-health statistics from per-head counts [heads, clusters].

  Returns (each averaged over heads):
    entropy: assignment entropy in nats (log k when perfectly balanced).
    empty_fraction: fraction of clusters that received no token.
    max_share: share of tokens taken by the largest cluster.
  """
  total = jnp.maximum(jnp.sum(counts, axis=-1, keepdims=True), 1.0)
  p = counts / total
  entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)),
                               0.0), axis=-1)
  return {
      "entropy": jnp.mean(entropy),
      "empty_fraction": jnp.mean((counts == 0).astype(jnp.float32)),
      "max_share": jnp.mean(jnp.max(p, axis=-1)),
  }


def sample_vectors(x: Array, mask: Optional[Array], num: int,
                   seed: int = 0) -> Array:
  """`num` distinct valid routing vectors per head, picked at random.

  Deterministic (a fixed key): the k-means state needs no PRNG stream.

  Args:
    x: [batch, length, heads, head_dim].
    mask: optional [batch, length] bool.
    num: how many vectors per head (tokens are reused when fewer are valid).

  Returns:
    [heads, num, head_dim] float32.
  """
  b, n, h, d = x.shape
  flat = jnp.swapaxes(x.reshape(b * n, h, d), 0, 1).astype(jnp.float32)
  axis = _REPLICA_AXIS.get()
  if axis is None:
    noise = jax.random.uniform(jax.random.key(seed), (h, b * n))
  else:
    # This replica's slice of the noise over the whole batch, so the draw
    # does not depend on how many replicas share it.
    total = jax.lax.axis_size(axis) * b * n
    noise = jax.lax.dynamic_slice_in_dim(
        jax.random.uniform(jax.random.key(seed), (h, total)),
        jax.lax.axis_index(axis) * b * n, b * n, axis=1)
  if mask is not None:
    noise = jnp.where(mask.reshape(1, b * n), noise, -1.0)
  return _top_rows(noise, flat, num)


def worst_fit_vectors(x: Array, scores_: Array, mask: Optional[Array],
                      num: int) -> Array:
  """The `num` valid vectors per head farthest from every centroid.

  Far-away vectors are the k-means++ choice for re-seeding a dead cluster:
  they are where the current centroids serve the data worst.

  Args:
    x: [batch, length, heads, head_dim].
    scores_: [batch, heads, length, clusters] scores of x.
    mask: optional [batch, length] bool.

  Returns:
    [heads, num, head_dim] float32.
  """
  b, n, h, d = x.shape
  best = jnp.max(scores_, axis=-1)  # [b, h, n]
  if mask is not None:
    best = jnp.where(mask[:, None, :], best, jnp.inf)
  best = jnp.swapaxes(best, 0, 1).reshape(h, b * n)
  flat = jnp.swapaxes(x.reshape(b * n, h, d), 0, 1).astype(jnp.float32)
  return _top_rows(-best, flat, num)


def revive_dead(state: EMAState, candidates: Array, threshold: float,
                epsilon: float = 1e-5) -> tuple[EMAState, Array]:
  """Re-seeds clusters whose EMA count fell below threshold × the mean.

  The i-th dead cluster of a head takes candidate i as its centroid, with an
  EMA count of 2·threshold × the mean count: a real cluster with a grace
  period (about ln 2 / (1 − λ) updates) to attract members before it could
  be revived again.

  Args:
    state: the EMA state after this step's update.
    candidates: [heads, clusters, head_dim] replacement centroids.
    threshold: fraction of the mean count below which a cluster is dead.
    epsilon: the Laplace smoothing of `ema_update`.

  Returns:
    (new state, dead [heads, clusters] bool).
  """
  mean = jnp.mean(state.ema_count, axis=-1, keepdims=True)
  dead = state.ema_count < threshold * mean
  rank = jnp.clip(jnp.cumsum(dead, axis=-1) - 1, 0, None)
  seed = jnp.take_along_axis(candidates, rank[..., None], axis=1)
  count = jnp.broadcast_to(2.0 * threshold * mean, dead.shape)
  new_count = jnp.where(dead, count, state.ema_count)
  new_sums = jnp.where(dead[..., None], seed * count[..., None],
                       state.ema_sums)
  # The Laplace-smoothed centroid of the revived cluster is (almost) seed.
  k = new_count.shape[-1]
  total = jnp.sum(new_count, axis=-1, keepdims=True)
  smoothed = (new_count + epsilon) / (total + k * epsilon) * total
  centroids = jnp.where(dead[..., None], new_sums / smoothed[..., None],
                        state.centroids)
  return EMAState(centroids, new_count, new_sums), dead


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
  update. `route_many` does the same for several sets of vectors (queries
  and keys clustered separately): all are scored with the old centroids,
  then the EMA runs once per set, in order, as the reference does.

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
          f"revive_threshold must be in [0, 0.5), got {self.revive_threshold}")
    axes = ("heads", "clusters", "kv")
    shape = (self.num_heads, self.num_clusters, self.head_dim)

    def init_means():
      key = self.make_rng("params") if self.has_rng("params") else (
          jax.random.key(0))
      return init_centroids(key, *shape)

    boxed = lambda f, names: nn.with_logical_partitioning(f, names)()
    self.centroids = self.variable(KMEANS_COLLECTION, "centroids", boxed,
                                   init_means, axes)
    self.ema_count = self.variable(
        KMEANS_COLLECTION, "ema_count", boxed,
        lambda: jnp.full(shape[:2], self.prior_count, jnp.float32), axes[:2])
    # The reference initialises the EMA sums to the initial centroids (with
    # prior_count > 0 they are the prior's sums, prior_count · μ0).
    self.ema_sums = self.variable(
        KMEANS_COLLECTION, "ema_sums", boxed,
        lambda: jnp.asarray(nn.unbox(self.centroids.value)) * (
            self.prior_count if self.prior_count > 0 else 1.0), axes)
    self.num_updates = self.variable(
        KMEANS_COLLECTION, "num_updates", boxed,
        lambda: jnp.zeros(shape[:1], jnp.int32), axes[:1])

  def current(self) -> Array:
    """The centroids [heads, clusters, head_dim] (float32), no gradient."""
    return jax.lax.stop_gradient(nn.unbox(self.centroids.value))

  def __call__(self, x: Array, mask: Optional[Array] = None,
               update: bool = False) -> KMeansOutput:
    """Scores and assigns x, then (maybe) updates the EMA state.

    Args:
      x: [batch, length, heads, head_dim] routing vectors (normalised).
      mask: optional [batch, length] bool, False at padding.
      update: request the EMA update (train mode).

    Returns:
      KMeansOutput computed with the centroids from before any update.
    """
    return self.route_many((x,), mask, update)[0]

  def route_many(self, xs: Sequence[Array], mask: Optional[Array] = None,
                 update: bool = False,
                 fit: Optional[Sequence[bool]] = None) -> list[KMeansOutput]:
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
      raise ValueError(f"fit must name at least one of {len(xs)} sets, got "
                       f"{fit}")
    mu = self.current()
    outs, stats = [], []
    for x in xs:
      s = scores(x, mu)
      a = jnp.argmax(s, axis=-1).astype(jnp.int32)
      loss = self.commitment_weight * commitment_loss(x, mu, a, mask)
      counts, sums = batch_statistics(x, a, self.num_clusters, mask)
      outs.append(KMeansOutput(s, a, loss, cluster_health(counts)))
      stats.append((counts, sums))
    if (update and self.is_mutable_collection(KMEANS_COLLECTION)
        and not self.is_initializing()):
      keep = [i for i, f in enumerate(fit) if f]
      self._update([xs[i] for i in keep], [outs[i] for i in keep],
                   [stats[i] for i in keep], mask)
    return outs

  def _update(self, xs, outs, stats, mask):
    state = EMAState(self.current(), nn.unbox(self.ema_count.value),
                     nn.unbox(self.ema_sums.value))
    first = nn.unbox(self.num_updates.value) == 0  # [heads]
    if self.data_init:
      seeds = sample_vectors(xs[0], mask, self.num_clusters)
      prior = self.prior_count if self.prior_count > 0 else 1.0
      fresh = EMAState(seeds, jnp.full_like(state.ema_count,
                                            self.prior_count), seeds * prior)
      state = jax.tree.map(
          lambda a, f: jnp.where(first.reshape((-1,) + (1,) * (a.ndim - 1)),
                                 f, a), state, fresh)
    for counts, sums in stats:
      state = ema_update(state, counts, sums, self.decay, self.epsilon)
    if self.revive_threshold > 0:
      candidates = worst_fit_vectors(xs[0], outs[0].scores, mask,
                                     self.num_clusters)
      state, _ = revive_dead(state, candidates, self.revive_threshold,
                             self.epsilon)
    self.centroids.value = _rebox(self.centroids.value, state.centroids)
    self.ema_count.value = _rebox(self.ema_count.value, state.ema_count)
    self.ema_sums.value = _rebox(self.ema_sums.value, state.ema_sums)
    self.num_updates.value = _rebox(self.num_updates.value,
                                    nn.unbox(self.num_updates.value) + 1)


def _rebox(old, new):
  """Keeps the LogicallyPartitioned box (if any) around an updated value."""
  if isinstance(old, nn.Partitioned):
    return old.replace_boxed(new)
  return new
