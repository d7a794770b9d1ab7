"""k-means routing attention: the paper's balanced routing and our causal one.

Both modes share the front end of reference §1.1: bias-free Q/K/V
projections, parameter-free LayerNorm of Q and K (used for clustering *and*
for the attention logits), centroids from the `KMeans` module.

routing="topk" (reference §1.3–1.5): for each centroid, the top-w positions by
score over the whole sequence, sorted by position, attend among themselves
(causal mask from original positions); outputs are averaged over the clusters
that picked a token with +0.01 smoothing; unpicked tokens get 0. Exact for
bidirectional use; in a decoder, whether a past token is picked depends on
future tokens (reference §4.3).

routing="causal" (design.md §2): each token joins its argmax cluster; a query
attends to the w most recent members of its cluster up to and including
itself. Computed by a stable sort of the tokens by cluster, cutting the sorted
order into query blocks of w/2 and letting each block attend to itself and
the w sorted positions before it under a static band ∧ same-cluster mask:
O(n·w·d) time and memory, nothing n×n.
"""

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from routing_jax import attention_core as core
from routing_jax import kmeans as km

Array = jax.Array

ROUTINGS = ("causal", "topk")
POSITIONS = ("none", "rope")


def _take(a: Array, idx: Array) -> Array:
  """Gathers along the length axis: a [b, h, n, ...], idx [b, h, m]."""
  idx = idx.reshape(idx.shape + (1,) * (a.ndim - 3))
  return jnp.take_along_axis(a, idx, axis=2)


@jax.custom_vjp
def permute(a: Array, perm: Array, inverse: Array) -> Array:
  """a[:, :, perm] for a [b, h, N, ...]; its VJP gathers by `inverse`.

  The transpose of a gather is a scatter-add, which is slow on CPU; for a
  permutation it is simply the gather by the inverse permutation.
  """
  return _take(a, perm)


def _permute_fwd(a, perm, inverse):
  return _take(a, perm), (perm, inverse)


def _permute_bwd(res, g):
  perm, inverse = res
  return _take(g, inverse), None, None


permute.defvjp(_permute_fwd, _permute_bwd)


def causal_routing_attention(q: Array, k: Array, v: Array, clusters: Array,
                             mask: Optional[Array], *, num_clusters: int,
                             window: int, logit_scale: float = 1.0,
                             dropout_rate: float = 0.0,
                             dropout_rng: Optional[Array] = None,
                             dtype: Any = jnp.float32) -> Array:
  """Exactly causal routing: the last `window` same-cluster tokens.

  Tokens are stably sorted by cluster, so each cluster's members are
  contiguous and in position order. Query i (sorted index) then sees exactly
  the sorted indices j with i − w < j ≤ i and cluster_j = cluster_i: its w
  most recent same-cluster tokens, itself included. Cutting the sorted order
  into query blocks of w/2, these all lie in the query's block or the two
  before it, at a fixed band of offsets, so the mask is a static band AND
  "same cluster", over 1.5w keys per query.

  Args:
    q, k, v: [batch, length, heads, head_dim] (q, k normalised).
    clusters: [batch, heads, length] int32 cluster ids in [0, num_clusters).
    mask: optional [batch, length] bool, False at padding.
    num_clusters: k.
    window: w.
    logit_scale, dropout_rate, dropout_rng, dtype: as `blocked_attention`.

  Returns:
    [batch, length, heads, head_dim]; zero at padding.
  """
  b, n, h, d = q.shape
  w = window
  # Queries in blocks of w/2 (w when odd): the w keys before a query lie in
  # the r = w / bq blocks before its block or in its own, so each block
  # attends to w + bq keys (1.5w rather than 2w for blocks of w).
  bq = w // 2 if w % 2 == 0 and w > 1 else w
  r = w // bq
  nb = -(-n // bq)
  npad = nb * bq
  valid = jnp.ones((b, n), bool) if mask is None else mask.astype(bool)
  valid = jnp.pad(valid, ((0, 0), (0, npad - n)))[:, None, :]  # [b, 1, N]
  # Padding goes to a sentinel cluster k that sorts last and matches nothing
  # real (padding queries see only padding; their outputs are zeroed).
  c = jnp.pad(clusters.astype(jnp.int32), ((0, 0), (0, 0), (0, npad - n)))
  c = jnp.where(valid, c, num_clusters)
  pos = jnp.broadcast_to(jnp.arange(npad, dtype=jnp.int32), c.shape)
  cs, perm = jax.lax.sort((c, pos), dimension=2, num_keys=1, is_stable=True)
  rows = (jnp.arange(b)[:, None, None], jnp.arange(h)[None, :, None])
  inverse = jnp.zeros_like(perm).at[rows + (perm,)].set(pos)

  tr = lambda a: jnp.swapaxes(
      jnp.pad(a, ((0, 0), (0, npad - n), (0, 0), (0, 0))), 1, 2)
  blk = lambda a: a.reshape(a.shape[:2] + (nb, bq) + a.shape[3:])
  qs, ks, vs = (blk(permute(tr(a), perm, inverse)) for a in (q, k, v))

  def with_previous(a, fill):
    """[b, h, nb, bq, ...] -> [b, h, nb, (r+1)·bq, ...]: r previous + own."""
    padded = jnp.pad(a, ((0, 0), (0, 0), (r, 0)) + ((0, 0),) * (a.ndim - 3),
                     constant_values=fill)
    return jnp.concatenate([padded[:, :, j:j + nb] for j in range(r + 1)],
                           axis=3)

  cq = blk(cs)
  ck = with_previous(cq, -1)
  # Key slot j of query slot t has sorted offset t + w − j (r·bq = w): keep
  # offsets 0..w−1, i.e. t < j <= t + w.
  slot = jnp.arange(bq)[:, None]
  keys = jnp.arange((r + 1) * bq)[None, :]
  band = (keys > slot) & (keys <= slot + w)
  msk = (ck[..., None, :] == cq[..., :, None]) & band
  o = core.blocked_attention(qs, with_previous(ks, 0), with_previous(vs, 0),
                             msk, logit_scale=logit_scale,
                             dropout_rate=dropout_rate,
                             dropout_rng=dropout_rng, dtype=dtype)
  o = permute(o.reshape(b, h, npad, d), inverse, perm)
  o = o * valid[..., None].astype(o.dtype)
  return jnp.swapaxes(o[:, :, :n], 1, 2)


def topk_routing_attention(q: Array, k: Array, v: Array, q_scores: Array,
                           k_scores: Array, mask: Optional[Array], *,
                           window: int, causal: bool,
                           logit_scale: float = 1.0,
                           dropout_rate: float = 0.0,
                           dropout_rng: Optional[Array] = None,
                           dtype: Any = jnp.float32
                           ) -> tuple[Array, Array]:
  """The paper's balanced routing (reference §1.3–1.5).

  Args:
    q, k, v: [batch, length, heads, head_dim] (q, k normalised).
    q_scores, k_scores: [batch, heads, length, clusters] centroid scores of
      the queries and keys (the same array when Q and K are shared).
    mask: optional [batch, length] bool, False at padding.
    window: w, tokens per cluster (w <= length).
    causal: mask keys after the query by original position.

  Returns:
    out [batch, length, heads, head_dim] and the number of clusters that
    picked each token, [batch, heads, length].
  """
  b, n, h, d = q.shape
  valid = jnp.ones((b, n), bool) if mask is None else mask.astype(bool)
  vh = valid[:, None, :]  # [b, 1, n]

  def members(s):
    s = jnp.where(vh[..., None], s, core.MASK_VALUE)  # padding picked last
    _, idx = jax.lax.top_k(jnp.swapaxes(s, 2, 3), window)  # [b, h, k, w]
    return jnp.sort(idx, axis=-1).astype(jnp.int32)

  qi = members(q_scores)
  ki = qi if k_scores is q_scores else members(k_scores)
  kc = qi.shape[2]
  flat = lambda i: i.reshape(b, h, kc * window)
  gather = lambda a, i: _take(jnp.swapaxes(a, 1, 2), flat(i)).reshape(
      b, h, kc, window, d)
  qg, kg, vg = gather(q, qi), gather(k, ki), gather(v, ki)
  kvalid = jnp.take_along_axis(jnp.broadcast_to(vh, (b, h, n)), flat(ki),
                               axis=-1).reshape(b, h, kc, 1, window)
  msk = kvalid
  if causal:
    msk = msk & (ki[..., None, :] <= qi[..., :, None])
  o = core.blocked_attention(qg, kg, vg, msk, logit_scale=logit_scale,
                             dropout_rate=dropout_rate,
                             dropout_rng=dropout_rng, dtype=dtype)
  rows = (jnp.arange(b)[:, None, None], jnp.arange(h)[None, :, None])
  out = jnp.zeros((b, h, n, d), jnp.float32).at[rows + (flat(qi),)].add(
      o.reshape(b, h, kc * window, d).astype(jnp.float32))
  count = jnp.zeros((b, h, n), jnp.float32).at[rows + (flat(qi),)].add(1.0)
  out = out / (count + 0.01)[..., None] * vh[..., None]
  return jnp.swapaxes(out, 1, 2).astype(dtype), count


class RoutingAttention(nn.Module):
  """Multi-head k-means routing attention with its own projections.

  Attributes:
    num_heads: routing heads h.
    head_dim: per-head depth d.
    num_clusters: k centroids per head.
    window: w, keys per query (causal) or tokens per cluster (topk).
    routing: "causal" or "topk"; None picks "causal" when causal=True and
      "topk" otherwise.
    causal: decoder masking. routing="causal" requires it.
    share_qk: keys are the queries (the paper's default).
    kmeans_decay, kmeans_epsilon, commitment_weight: KMeans settings.
    kmeans_prior_count: KMeans.prior_count; None means 0 (the reference) for
      topk and 1 for causal routing, whose argmax needs sane centroid norms.
    logit_scale: multiplies LN(q)·LN(k); 1.0 is the reference.
    position: "none" or "rope" (rotates the normalised q, k for the logits
      only; clustering stays content-based).
    attention_dropout: dropout on the attention weights (train only).
    max_decode_length: cache length for topk decoding (which recomputes the
      routing over the whole cache each step, as the reference does).
    dtype, param_dtype, kernel_init: as LocalAttention.
  """
  num_heads: int
  head_dim: int
  num_clusters: int
  window: int
  routing: Optional[str] = None
  causal: bool = True
  share_qk: bool = True
  kmeans_decay: float = 0.999
  kmeans_epsilon: float = 1e-5
  commitment_weight: float = 1e-4
  kmeans_prior_count: Optional[float] = None
  logit_scale: float = 1.0
  position: str = "none"
  rope_base: float = 10000.0
  attention_dropout: float = 0.0
  max_decode_length: int = 0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Callable[..., Array] = core.default_kernel_init()

  @property
  def mode(self) -> str:
    if self.routing is None:
      return "causal" if self.causal else "topk"
    return self.routing

  def validate(self):
    if self.routing is not None and self.routing not in ROUTINGS:
      raise ValueError(
          f"routing must be one of {ROUTINGS}, got {self.routing!r}")
    if self.mode == "causal" and not self.causal:
      raise ValueError(
          'routing="causal" requires causal=True; use routing="topk" for '
          "bidirectional attention")
    for name in ("num_heads", "head_dim", "num_clusters", "window"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    if self.position not in POSITIONS:
      raise ValueError(
          f"position must be one of {POSITIONS}, got {self.position!r}")
    if not 0.0 <= self.attention_dropout < 1.0:
      raise ValueError(
          f"attention_dropout must be in [0, 1), got {self.attention_dropout}")

  @nn.compact
  def __call__(self, x: Array, mask: Optional[Array] = None,
               train: bool = False, decode: bool = False,
               positions: Optional[Array] = None, return_aux: bool = False):
    """Routes and attends.

    Args:
      x: [batch, length, features].
      mask: optional [batch, length] bool, False at padding.
      train: dropout on, and the k-means EMA update (written only when the
        caller made "kmeans" mutable; never during init).
      decode: one cached step (length 1) in the "cache" collection.
      positions: decode only: [batch] int32 position of the new token.
      return_aux: return (y, aux) with aux = {"loss": β·commitment loss,
        cluster-health stats}; otherwise the loss is sown into the
        "aux_loss" collection (read it with mutable=["aux_loss"]).

    Returns:
      y [batch, length, features] (and aux when return_aux).
    """
    self.validate()
    core.check_input(x)
    core.check_mask(mask, x)
    b, n, features = x.shape
    h, d = self.num_heads, self.head_dim
    proj = lambda name: core.head_projection(
        h * d, ("embed", "heads"), self.dtype, self.param_dtype,
        self.kernel_init, name)
    # The reference scales q by d^-0.5 first; the LayerNorm cancels it.
    qn = km.normalize(core.split_heads(proj("query")(x), h))
    kn = qn if self.share_qk else km.normalize(
        core.split_heads(proj("key")(x), h))
    v = core.split_heads(proj("value")(x), h)
    prior = self.kmeans_prior_count
    if prior is None:
      prior = 1.0 if self.mode == "causal" else 0.0
    kmeans = km.KMeans(h, self.num_clusters, d, decay=self.kmeans_decay,
                       epsilon=self.kmeans_epsilon,
                       commitment_weight=self.commitment_weight,
                       prior_count=prior, name="kmeans")
    if decode:
      from routing_jax import routing_decode  # pylint: disable=g-import-not-at-top
      o = routing_decode.decode_step(self, kmeans, qn, kn, v, positions)
      aux = {"loss": jnp.zeros((), jnp.float32)}
    else:
      o, aux = self._attend(kmeans, qn, kn, v, mask, train)
    y = core.head_projection(
        features, ("heads", "embed"), self.dtype, self.param_dtype,
        self.kernel_init, "out")(o.reshape(b, n, h * d))
    if return_aux:
      return y, aux
    if not self.is_initializing():
      self.sow(km.AUX_LOSS_COLLECTION, "commitment", aux["loss"])
    return y

  def _attend(self, kmeans, qn, kn, v, mask, train):
    b, n = qn.shape[:2]
    update = train
    rng = (self.make_rng("dropout")
           if train and self.attention_dropout > 0 else None)
    rate = self.attention_dropout if train else 0.0
    qr, kr = qn, kn
    if self.position == "rope":
      pos = jnp.arange(n)[None]
      qr, kr = (core.rope(t, pos, self.rope_base) for t in (qn, kn))
    common = dict(logit_scale=self.logit_scale, dropout_rate=rate,
                  dropout_rng=rng, dtype=self.dtype)
    if self.mode == "causal":
      # One cluster id per token; with separate keys it comes from the key.
      km_out = kmeans(kn, mask, update=update)
      o = causal_routing_attention(
          qr, kr, v, km_out.assignments, mask, num_clusters=self.num_clusters,
          window=self.window, **common)
      aux = dict(km_out.stats, loss=km_out.loss)
      return o, aux
    if self.window > n:
      raise ValueError(
          f'routing="topk" needs window <= length, got window={self.window} '
          f"and length {n}")
    if self.share_qk:
      km_out = kmeans(qn, mask, update=update)
      qs = ks = km_out.scores
    else:
      # One EMA update from the queries and keys together.
      both_mask = None if mask is None else jnp.concatenate([mask, mask], 1)
      km_out = kmeans(jnp.concatenate([qn, kn], axis=1), both_mask,
                      update=update)
      qs, ks = km_out.scores[:, :, :n], km_out.scores[:, :, n:]
    o, count = topk_routing_attention(qr, kr, v, qs, ks, mask,
                                      window=self.window, causal=self.causal,
                                      **common)
    valid = (jnp.ones((b, n)) if mask is None else mask)[:, None, :]
    unselected = jnp.sum((count == 0) * valid) / jnp.maximum(
        jnp.sum(valid) * count.shape[1], 1.0)
    aux = dict(km_out.stats, loss=km_out.loss,
               unselected_fraction=unselected)
    return o, aux
