# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""TransformerLM: a decoder-only Routing Transformer for text and images.

Each layer has some local heads and, in routing layers, some routing heads
(docs/paper.md §3.1: in a non-routing layer the routing heads become local heads,
so every layer has `num_heads` heads). The two head groups have their own
projections and their outputs are added, which equals concatenating the heads
before one output projection. The reference's extra shared d×d "heads talk"
layer is a per-head linear map right before that projection, so the output
projection absorbs it; we leave it out.

Layers of the same kind (routing or not) that follow each other form a
segment; with `scan_layers` each segment is one `nn.scan`, so "skip_first:21"
scans 21 local layers and then runs one routing layer.
"""

import functools
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from routing_jax.common_types import Array
from routing_jax.nn import attention_core as core
from routing_jax.nn import kmeans_ops
from routing_jax.nn import layers
from routing_jax.nn.local_attention import LocalAttention
from routing_jax.nn.model_config import ModelConfig  # re-exported
from routing_jax.nn.routing_attention import RoutingAttention

STAT_KEYS = ("entropy", "empty_fraction", "max_share")


def kernel_init(cfg: ModelConfig):
  """The dense kernels' initialiser: `cfg.init_scale` over `cfg.init_mode`."""
  return core.default_kernel_init(cfg.init_scale, cfg.init_mode)


def routing_attention(cfg: ModelConfig, **kw) -> RoutingAttention:
  """The routing heads of a routing layer of `cfg`: its `routing` config
  with the heads' positions resolved (ModelConfig.routing_heads_position)."""
  return RoutingAttention(
      num_heads=cfg.num_routing_heads,
      head_dim=cfg.head_dim,
      config=cfg.routing.replace(position=cfg.routing_heads_position),
      causal=cfg.causal,
      max_relative_position=cfg.max_relative_position,
      attention_dropout=cfg.attention_dropout,
      max_decode_length=cfg.max_len,
      dtype=cfg.jnp_dtype,
      param_dtype=cfg.jnp_param_dtype,
      kernel_init=kernel_init(cfg),
      **kw,
  )


def kmeans_settings(cfg: ModelConfig) -> kmeans_ops.Settings:
  """The settings of every routing layer's k-means update."""
  return routing_attention(cfg).kmeans_settings()


class DecoderLayer(nn.Module):
  """Attention (local + routing heads) and feed-forward, post- or pre-norm.

  x: [batch, length, embed] -> (x, aux) where aux holds this layer's
  k-means loss and cluster-health stats (zeros in a non-routing layer).
  """

  config: ModelConfig
  has_routing_heads: bool  # a routing layer (cfg.routing_mask())
  warming_up: Optional[bool] = None  # RoutingAttention.warming_up

  @nn.compact
  def __call__(
      self,
      x: Array,
      mask: Optional[Array],
      positions: Optional[Array],
      train: bool,
      decode: bool,
      prefill: bool = False,
  ):
    cfg = self.config
    dt, pdt = cfg.jnp_dtype, cfg.jnp_param_dtype
    init = kernel_init(cfg)
    n_route = cfg.num_routing_heads if self.has_routing_heads else 0
    n_local = cfg.num_heads - n_route
    pre = cfg.norm == "pre"
    h = layers.layer_norm(dt, pdt, "attn_norm")(x) if pre else x
    attn = jnp.zeros_like(x)
    aux = {"loss": jnp.zeros((), jnp.float32), "routing": jnp.zeros(())}
    aux.update({k: jnp.zeros((), jnp.float32) for k in STAT_KEYS})
    local_pos = {"relative": "relative", "rope": "rope"}.get(
        cfg.position, "none"
    )

    def plain_heads(num_heads, query_block, memory_flange, name):
      return LocalAttention(
          num_heads=num_heads,
          head_dim=cfg.head_dim,
          query_block=query_block,
          memory_flange=memory_flange,
          causal=cfg.causal,
          position=local_pos,
          max_relative_position=cfg.max_relative_position,
          attention_dropout=cfg.attention_dropout,
          dtype=dt,
          param_dtype=pdt,
          kernel_init=init,
          name=name,
      )(
          h,
          mask,
          train=train,
          decode=decode,
          positions=positions,
          prefill=prefill,
      )

    if n_local:
      attn += plain_heads(n_local, cfg.query_block, cfg.memory_flange, "local")
    if n_route and cfg.dense_routing_heads:
      # One block over the whole sequence: dense (causal) attention.
      attn += plain_heads(n_route, cfg.max_len, 0, "dense")
    elif n_route:
      y, raux = routing_attention(
          cfg, name="routing", warming_up=self.warming_up
      )(
          h,
          mask,
          train=train,
          decode=decode,
          positions=positions,
          prefill=prefill,
          return_aux=True,
      )
      attn += y
      aux["loss"] = raux["loss"]
      aux["routing"] = jnp.ones(())
      aux.update({k: raux.get(k, aux[k]) for k in STAT_KEYS})
    drop = lambda t: nn.Dropout(cfg.residual_dropout)(
        t, deterministic=not train
    )
    x = x + drop(attn)
    if not pre:
      x = layers.layer_norm(dt, pdt, "attn_norm")(x)
    h = layers.layer_norm(dt, pdt, "ffn_norm")(x) if pre else x
    f = layers.FeedForward(
        cfg.d_ff,
        cfg.ffn,
        cfg.relu_dropout,
        init,
        dt,
        pdt,
        use_bias=cfg.ffn_bias,
        name="ffn",
    )(h, train=train)
    x = x + drop(f)
    if not pre:
      x = layers.layer_norm(dt, pdt, "ffn_norm")(x)
    return x, aux


def segments(flags: tuple[bool, ...]) -> list[tuple[bool, int, int]]:
  """Runs of equal flags: [(routing, first_layer, count), ...]."""
  out = []
  for i, f in enumerate(flags):
    if out and out[-1][0] == f:
      out[-1] = (f, out[-1][1], out[-1][2] + 1)
    else:
      out.append((f, i, 1))
  return out


def _layer_class(cfg: ModelConfig):
  cls = DecoderLayer
  if cfg.remat_policy != "none":
    policy = (
        None
        if cfg.remat_policy == "full"
        else getattr(jax.checkpoint_policies, cfg.remat_policy)
    )
    # train, decode and prefill are python bools: static for the rematted
    # function.
    cls = nn.remat(
        cls,
        policy=policy,
        prevent_cse=not cfg.scan_layers,
        static_argnums=(4, 5, 6),
    )
  return cls


class TransformerLM(nn.Module):
  """Decoder-only Routing Transformer.

  Call: `(logits, aux) = model.apply(variables, inputs, ...)` with
    inputs: [batch, length] int32 (already right-shifted, start token 0),
    mask: optional [batch, length] bool, False at padding,
    train: dropout, target dropout and the k-means EMA update,
    decode: one token per call through the "cache" collection,
    positions: decode only, [batch] int32 position of that token,
    prefill: a whole unpadded prompt (positions 0 .. length−1) in one
      parallel pass that fills a fresh "cache" collection; decoding then
      continues at position `length` exactly as if the prompt had been fed
      one token at a time.
    return_hidden: return the features that enter the output projection
      [batch, length, E or H] instead of logits (the training loss applies
      that projection in chunks, see `output_logits` and
      routing_jax/nn/loss.py).
  Returns logits [batch, length, vocab_size] float32 and aux = {"kmeans_loss":
  the k-means losses of all layers summed, and cluster-health stats averaged
  over routing layers}. The output layer has `padded_vocab_size` entries;
  the padding is sliced off here.

  `warming_up` (RoutingAttention.warming_up): None decides the causal
  routing warm-up in the graph from the k-means count; True / False build
  only the dense warm-up / the routed attention, so that a step compiled
  for either holds only its own memory (`model.clone(warming_up=...)`).
  """

  config: ModelConfig
  warming_up: Optional[bool] = None

  @nn.compact
  def __call__(
      self,
      inputs: Array,
      mask: Optional[Array] = None,
      train: bool = False,
      decode: bool = False,
      positions: Optional[Array] = None,
      prefill: bool = False,
      return_hidden: bool = False,
  ):
    cfg = self.config
    dt, pdt = cfg.jnp_dtype, cfg.jnp_param_dtype
    init = kernel_init(cfg)
    if inputs.ndim != 2:
      raise ValueError(f"inputs must be [batch, length], got {inputs.shape}")
    b, n = inputs.shape
    if decode:
      if n != 1 or positions is None:
        raise ValueError(
            "decode=True takes inputs [batch, 1] and positions [batch]"
        )
      pos = positions[:, None]
    else:
      pos = jnp.arange(n)[None]
    if train and cfg.target_dropout > 0:
      keep = jax.random.bernoulli(
          self.make_rng("dropout"), 1.0 - cfg.target_dropout, inputs.shape
      )
      inputs = jnp.where(keep, inputs, 0)
    if cfg.is_image:
      embed = layers.ImageEmbed(
          cfg.image_shape, cfg.d_model, dt, pdt, name="embed"
      )
      x = embed(inputs, pos)
      x = nn.Dropout(cfg.embedding_dropout)(x, deterministic=not train)
    else:
      # Embedding dropout acts on the E-dimensional table rows, before the
      # E -> H projection, as in the paper's code.
      embed = layers.TextEmbed(
          cfg.padded_vocab_size,
          cfg.embed_dim,
          cfg.d_model,
          init,
          dt,
          pdt,
          dropout=cfg.embedding_dropout,
          name="embed",
      )
      x = embed(inputs, train=train)
    x = nn.Dropout(cfg.residual_dropout)(x, deterministic=not train)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))

    layer_cls = _layer_class(cfg)
    auxes = []
    for has_routing, first, count in segments(cfg.routing_mask()):
      if cfg.scan_layers:
        stack = nn.scan(
            layer_cls,
            variable_axes={
                "params": 0,
                "kmeans": 0,
                "kmeans_stats": 0,
                "cache": 0,
            },
            split_rngs={"params": True, "dropout": True},
            in_axes=(nn.broadcast,) * 5,
            length=count,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )
        x, aux = stack(
            cfg, has_routing, self.warming_up, name=f"layers_{first}"
        )(x, mask, positions, train, decode, prefill)
        auxes.append(aux)
      else:
        for i in range(first, first + count):
          x, aux = layer_cls(
              cfg, has_routing, self.warming_up, name=f"layer_{i}"
          )(x, mask, positions, train, decode, prefill)
          auxes.append(jax.tree.map(lambda a: a[None], aux))
    aux = jax.tree.map(lambda *a: jnp.concatenate(a), *auxes)

    if cfg.norm == "pre":
      x = layers.layer_norm(dt, pdt, "final_norm")(x)
    if not cfg.is_image and cfg.embed_dim != cfg.d_model:
      x = layers.dense(
          cfg.embed_dim,
          ("embed", "emb"),
          use_bias=True,
          kernel_init=init,
          dtype=dt,
          param_dtype=pdt,
          name="out_emb",
      )(x)
    n_routing = jnp.maximum(jnp.sum(aux["routing"]), 1.0)
    out = {"kmeans_loss": jnp.sum(aux["loss"])}
    out.update(
        {k: jnp.sum(aux[k] * aux["routing"]) / n_routing for k in STAT_KEYS}
    )
    tied = cfg.tie_embeddings and not cfg.is_image
    if return_hidden:
      if self.is_initializing() and not tied:
        _output_layer(cfg, name="logits")(x)  # creates the output params
      return x, out
    logits = embed.attend(x) if tied else _output_layer(cfg, name="logits")(x)
    # Padded vocabulary entries are not tokens: users never see them.
    return logits[..., : cfg.vocab_size].astype(jnp.float32), out


def _output_layer(cfg: ModelConfig, name: Optional[str] = None) -> nn.Dense:
  """The untied [E or H, padded vocab] projection (float32 logits)."""
  axes = ("embed", "vocab") if cfg.is_image else ("emb", "vocab")
  return layers.dense(
      cfg.padded_vocab_size,
      axes,
      use_bias=True,
      kernel_init=kernel_init(cfg),
      dtype=cfg.jnp_dtype,
      param_dtype=cfg.jnp_param_dtype,
      name=name,
      float32_output=True,
  )


def output_logits(cfg: ModelConfig, params: Any, hidden: Array) -> Array:
  """The output projection alone, as a function of the params.

  hidden: [..., E or H] from `apply(..., return_hidden=True)`.
  Returns: [..., padded_vocab_size] float32 logits, padded entries included
  (unmasked), exactly what `__call__` computes before slicing them off.
  """
  if cfg.tie_embeddings and not cfg.is_image:
    embed = layers.TextEmbed(
        cfg.padded_vocab_size,
        cfg.embed_dim,
        cfg.d_model,
        dtype=cfg.jnp_dtype,
        param_dtype=cfg.jnp_param_dtype,
    )
    return embed.apply(
        {"params": params["embed"]}, hidden, method=layers.TextEmbed.attend
    )
  return _output_layer(cfg).apply({"params": params["logits"]}, hidden)


def loop_to_scan(params: Any, config: ModelConfig) -> Any:
  """Converts a python-loop variable tree ("layer_i") to the scanned layout.

  Works on any collection ("params", "kmeans", "cache"): layers of a segment
  are stacked on a new leading axis under "layers_<first>".
  """
  out = {k: v for k, v in params.items() if not k.startswith("layer_")}
  for _, first, count in segments(config.routing_mask()):
    group = [
        params[f"layer_{i}"]
        for i in range(first, first + count)
        if f"layer_{i}" in params
    ]
    if group:
      out[f"layers_{first}"] = jax.tree.map(lambda *a: jnp.stack(a), *group)
  return out


def scan_to_loop(params: Any, config: ModelConfig) -> Any:
  """The inverse of `loop_to_scan`."""
  out = {k: v for k, v in params.items() if not k.startswith("layers_")}
  for _, first, count in segments(config.routing_mask()):
    if f"layers_{first}" not in params:
      continue
    stacked = params[f"layers_{first}"]
    for j in range(count):
      out[f"layer_{first + j}"] = jax.tree.map(
          functools.partial(lambda a, j: a[j], j=j), stacked
      )
  return out


def init_variables(
    model: TransformerLM,
    rng: Array,
    batch: int = 1,
    length: Optional[int] = None,
) -> dict[str, Any]:
  """Initialises "params" and "kmeans" (no cache) from a dummy batch."""
  length = length or min(model.config.max_len, 2 * model.config.query_block)
  tokens = jnp.zeros((batch, length), jnp.int32)
  return dict(model.init({"params": rng}, tokens))
