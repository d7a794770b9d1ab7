# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""RoutingAttention: k-means routing attention with its decode caches.

The front end follows the paper's code: bias-free Q/K/V projections,
parameter-free LayerNorm of Q and K (used for clustering *and* for the
attention logits), centroids from the `KMeans` module. The attention itself
is one of the pure cores in `routing_core`, chosen by `RoutingConfig.mode`:

mode="causal" (the default, docs/causal_routing.md): each token joins the
argmax cluster of its key (and of its query, when Q and K are separate); a
query attends to the keys among the last w members of its cluster. Exactly causal; cached decoding keeps a ring of w members per
cluster and reproduces the teacher-forced outputs.

mode="topk" (the paper's balanced routing): every centroid picks its top-w
queries and keys over the whole sequence. Exact for bidirectional use; in a
decoder, whether a past token is picked depends on the future, and decoding
(the reference's fast decode: re-select among the tokens so far at every
step) does not reproduce the teacher-forced outputs.

config.implementation="pallas" runs the causal core as fused GPU kernels
(`routing_kernel`, docs/kernels.md) instead of XLA ops; same results.
"""

from typing import Any, Callable, Optional
import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp

from routing_jax.common_types import Array
from routing_jax.nn import attention_core as core
from routing_jax.nn import chunked_attention
from routing_jax.nn import kmeans as km
from routing_jax.nn import kmeans_ops
from routing_jax.nn import routing_core
from routing_jax.nn import routing_decoding
from routing_jax.nn import routing_kernel
from routing_jax.nn.routing_config import RoutingConfig


class RoutingAttention(routing_decoding.RoutingDecoding, nn.Module):
  """Multi-head k-means routing attention with its own projections.

  Attributes:
    num_heads: routing heads h.
    head_dim: per-head depth d.
    config: what routing does (clusters, window, mode, warm-up, k-means,
      positions, implementation): a `RoutingConfig`, whose fields are
      documented there; `ModelConfig.routing` is the same object.
    causal: decoder masking. config.mode="causal" requires it.
    warming_up: which side of the warm-up (config.warmup_steps) this call
      is on. None decides in the graph from the k-means update count taken
      before this call (both branches compiled, so the dense branch's
      memory is reserved for every step); True / False compile only the
      warm-up / the routed attention. Training loops that know the step
      pass it (the project's trainer compiles one step of each kind and
      switches on the host). The dense warm-up runs in key chunks with an
      online softmax (`chunked_attention`): O(n·d) memory, no [n, n]
      arrays.
    max_relative_position: relative distances are clipped to ±this.
    rope_base: RoPE's base.
    attention_dropout: dropout on the attention weights (train only).
    max_decode_length: cache length for topk decoding (which re-selects over
      the whole cache each step, as the reference does).
    dtype, param_dtype, kernel_init: as LocalAttention.
  """

  num_heads: int
  head_dim: int
  config: RoutingConfig = RoutingConfig()
  causal: bool = True
  warming_up: Optional[bool] = None
  max_relative_position: int = 64
  rope_base: float = 10000.0
  attention_dropout: float = 0.0
  max_decode_length: int = 0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Callable[..., Array] = core.default_kernel_init()

  @property
  def position_kind(self) -> str:
    """The heads' positions: config.position, "none" when unset."""
    return self.config.position or "none"

  def validate(self):
    self.config.validate("RoutingAttention.config.", causal=self.causal)
    for name in ("num_heads", "head_dim"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    core.check_head_options(
        self.position_kind, self.max_relative_position, self.attention_dropout
    )
    if self.config.implementation == "pallas":
      self._validate_pallas()

  def _validate_pallas(self):
    # Refused rather than silently run on XLA: whoever asks for the kernel
    # wants its memory profile.
    unsupported = {
        'position="relative"': self.position_kind == "relative",
        "attention_dropout > 0": self.attention_dropout > 0,
    }
    for what, present in unsupported.items():
      if present:
        raise ValueError(
            f'implementation="pallas" does not support {what}; '
            'use implementation="xla"'
        )
    routing_kernel.check_shapes(
        self.head_dim, *self.config.kernel_block_sizes, interpret=True
    )

  def kmeans_settings(self) -> kmeans_ops.Settings:
    """The k-means update's settings, mode-dependent defaults resolved."""
    k = self.config.resolved_kmeans()
    return kmeans_ops.Settings(
        decay=k.decay,
        epsilon=k.epsilon,
        prior_count=k.prior_count,
        data_init=k.data_init,
        revive_threshold=k.revive_threshold,
    )

  def _kmeans(self) -> km.KMeans:
    return km.KMeans(
        self.num_heads,
        self.config.num_clusters,
        self.head_dim,
        commitment_weight=self.config.kmeans.commitment_weight,
        name="kmeans",
        **self.kmeans_settings()._asdict(),
    )

  def _relative_tables(self) -> Optional[tuple[Array, Array]]:
    if self.position_kind != "relative":
      return None
    rows = 2 * self.max_relative_position + 1
    init = nn.with_logical_partitioning(
        nn.initializers.normal(self.head_dim**-0.5), ("relpos", "kv")
    )
    return (
        self.param("rel_key", init, (rows, self.head_dim), self.param_dtype),
        self.param("rel_value", init, (rows, self.head_dim), self.param_dtype),
    )

  @nn.compact
  def __call__(
      self,
      x: Array,
      mask: Optional[Array] = None,
      train: bool = False,
      decode: bool = False,
      positions: Optional[Array] = None,
      prefill: bool = False,
      return_aux: bool = False,
  ):
    """Routes and attends.

    Args:
      x: [batch, length, features].
      mask: optional [batch, length] bool, False at padding.
      train: dropout on, and the k-means EMA update (written only when the
        caller made "kmeans" mutable; never during init).
      decode: one cached step (length 1) in the "cache" collection.
      positions: decode only: [batch] int32 position of the new token.
      prefill: run a whole prompt (positions 0 .. length−1, no padding) in
        parallel and fill a fresh "cache" collection, so that decoding can
        continue at position `length`.
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
    h = self.num_heads
    proj = lambda name: core.head_projection(
        h * self.head_dim,
        ("embed", "heads"),
        self.dtype,
        self.param_dtype,
        self.kernel_init,
        name,
    )
    # The reference scales q by d^-0.5 first; the LayerNorm cancels it.
    qn = km.normalize(core.split_heads(proj("query")(x), h))
    kn = (
        qn
        if self.config.share_qk
        else km.normalize(core.split_heads(proj("key")(x), h))
    )
    v = core.split_heads(proj("value")(x), h)
    kmeans = self._kmeans()
    rel = self._relative_tables()
    if decode and prefill:
      raise ValueError("decode and prefill exclude each other")
    if decode:
      o = self._poison_while_warming_up(
          kmeans, self._decode(kmeans, qn, kn, v, rel, positions)
      )
      aux = {"loss": jnp.zeros((), jnp.float32)}
    elif prefill:
      if mask is not None:
        raise ValueError("prefill takes an unpadded prompt (mask=None)")
      o, aux = self._prefill(kmeans, qn, kn, v, rel)
      o = self._poison_while_warming_up(kmeans, o)
    else:
      o, aux = self._attend(kmeans, qn, kn, v, rel, mask, train)
    y = core.head_projection(
        features,
        ("heads", "embed"),
        self.dtype,
        self.param_dtype,
        self.kernel_init,
        "out",
    )(o.reshape(b, n, h * self.head_dim))
    if return_aux:
      return y, aux
    if not self.is_initializing():
      self.sow(km.AUX_LOSS_COLLECTION, "commitment", aux["loss"])
    return y

  # ------------------------------------------------------------ training

  def _rotate(self, qn, kn, pos):
    if self.position_kind != "rope":
      return qn, kn
    return (
        core.rope(qn, pos, self.rope_base),
        core.rope(kn, pos, self.rope_base),
    )

  def _attend(self, kmeans, qn, kn, v, rel, mask, train):
    b, n = qn.shape[:2]
    rng = (
        self.make_rng("dropout")
        if train and self.attention_dropout > 0
        else None
    )
    common = dict(
        rel=rel,
        max_relative_position=self.max_relative_position,
        logit_scale=self.config.logit_scale,
        dropout_rate=self.attention_dropout if train else 0.0,
        dropout_rng=rng,
        dtype=self.dtype,
    )
    qr, kr = self._rotate(qn, kn, jnp.arange(n)[None])
    # Read before `route_many` may write this step's update: a step taken
    # with "kmeans" mutable and one whose statistics are applied later by
    # the train step must see the same count.
    updates_before = nn.unbox(kmeans.num_updates.value)[0]
    sets = (qn,) if self.config.share_qk else (qn, kn)
    routed = kmeans.route_many(
        sets,
        mask,
        update=train,
        fit=None if self.config.share_qk else (self.config.fits_queries, True),
    )
    aux = dict(routed[0].stats, loss=sum(r.loss for r in routed))
    if self.config.mode == "causal":
      routed_fn = lambda: (
          self._causal(routed, qr, kr, v, mask, common),
          jnp.zeros((), jnp.float32),
      )
    else:
      routed_fn = lambda: self._topk(routed, qr, kr, v, mask, common)
    if not self.config.warmup_steps or self.warming_up is False:
      o, unselected = routed_fn()
    else:
      if self.config.warmup == "random":
        random = self._random_routing(routed, updates_before, b, n)
        warm = lambda: self._causal(random, qr, kr, v, mask, common)
      else:
        # As causal routing with one cluster: every earlier token (within
        # the warm-up window), computed in chunks.
        warm = lambda: chunked_attention.dense_causal_attention(
            qr,
            kr,
            v,
            mask,
            window=min(self.config.warmup_window or n, n),
            exclude_self=self.config.exclude_self,
            **common,
        )
      warm_fn = lambda: (warm(), jnp.zeros((), jnp.float32))
      if self.warming_up:
        o, unselected = warm_fn()
      else:
        o, unselected = jax.lax.cond(
            updates_before < self.config.warmup_steps, warm_fn, routed_fn
        )
    if self.config.mode == "topk":
      aux["unselected_fraction"] = unselected
    return o, aux

  def _random_routing(self, routed, count, b, n):
    """`routed` with uniformly random clusters (one per token, for its query
    and key), drawn afresh for every k-means count.

    About n / window clusters, so that a cluster's members fit in the
    window and a query sees a random ~1/k of the earlier tokens. The draw
    depends on the module's path and the count only (no rng stream to
    thread through every caller; layers and heads differ), never on
    content, so the warm-up stays exactly causal.
    """
    k = min(self.config.num_clusters, max(1, -(-n // self.config.window)))
    path = "/".join(str(p) for p in self.scope.path)
    key = jax.random.fold_in(
        jax.random.PRNGKey(zlib.crc32(path.encode()) % 2**31), count
    )
    clusters = jax.random.randint(key, (b, self.num_heads, n), 0, k)
    return [r._replace(assignments=clusters) for r in routed]

  def _topk(self, routed, qr, kr, v, mask, common):
    """Balanced top-k routing: (out, share of valid tokens picked by no
    centroid)."""
    b, n = qr.shape[:2]
    if self.config.window > n:
      raise ValueError(
          f'mode="topk" needs window <= length, got window={self.config.window}'
          f" and length {n}"
      )
    o, count = routing_core.topk_routing_attention(
        qr,
        kr,
        v,
        routed[0].scores,
        routed[-1].scores,
        mask,
        window=self.config.window,
        causal=self.causal,
        **common,
    )
    valid = (jnp.ones((b, n)) if mask is None else mask)[:, None, :]
    unselected = jnp.sum((count == 0) * valid) / jnp.maximum(
        jnp.sum(valid) * count.shape[1], 1.0
    )
    return o, unselected.astype(jnp.float32)

  def _causal(self, routed, qr, kr, v, mask, common):
    """Causal routing, on XLA or the Pallas kernels."""
    key_clusters = routed[-1].assignments
    query_clusters = None if self.config.share_qk else routed[0].assignments
    args = (qr, kr, v, key_clusters, mask)
    routing = dict(
        query_clusters=query_clusters,
        num_clusters=self.config.num_clusters,
        window=self.config.window,
        exclude_self=self.config.exclude_self,
    )
    if self.config.implementation == "pallas":
      block_q, block_k = self.config.kernel_block_sizes
      return routing_kernel.causal_routing_attention(
          *args,
          **routing,
          logit_scale=self.config.logit_scale,
          dtype=self.dtype,
          block_q=block_q,
          block_k=block_k,
      )
    return routing_core.causal_routing_attention(*args, **routing, **common)
