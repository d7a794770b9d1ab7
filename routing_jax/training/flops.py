# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Model FLOPs of a training step, counted from the configuration.

2 FLOPs per multiply-add: a token costs 2 x (parameters used in matmuls)
in the forward pass, plus attention, which the blocked kernels compute in
full blocks (masked entries included): a local head computes q + m logits
per query, a causal routing head 1.5w (blocks of w/2 against the w/2 own
and w previous sorted slots), a top-k routing head w, plus k centroid
scores. Training is 3 x the forward (the backward pass costs two); remat's
recomputation is not model work and is not counted, as in MFU.
"""

from typing import Any

from routing_jax.nn.model_config import ModelConfig


def matmul_params(cfg: ModelConfig, params: Any) -> int:
  """Parameters used in a matmul for every token: all but lookup tables.

  A text model's token table is a lookup unless tied to the output; an
  image model's sub-pixel and row/column tables are lookups.
  """
  import jax  # pylint: disable=g-import-not-at-top

  size = lambda tree: sum(int(x.size) for x in jax.tree.leaves(tree))
  embed = params.get("embed", {})
  if cfg.is_image:
    lookup = size(embed)
  elif cfg.tie_embeddings:
    lookup = 0
  else:
    lookup = size(embed.get("embedding", {}))
  return size(params) - lookup


def flops_per_token(
    cfg: ModelConfig, seq_len: int, matmul_param_count: int
) -> dict[str, float]:
  """{"forward": ..., "train": ...} FLOPs per token."""
  d = cfg.head_dim
  attn = 0.0
  for routed in cfg.routing_mask():
    n_route = cfg.num_routing_heads if routed else 0
    n_local = cfg.num_heads - n_route
    keys_local = min(cfg.query_block + cfg.memory_flange, seq_len)
    attn += n_local * 4 * keys_local * d
    if n_route:
      r = cfg.routing
      keys = 1.5 * r.window if r.mode == "causal" else r.window
      attn += n_route * (4 * min(keys, seq_len) * d + 2 * r.num_clusters * d)
  fwd = 2.0 * matmul_param_count + attn
  return {"forward": fwd, "train": 3.0 * fwd}


def train_flops_per_step(
    cfg: ModelConfig, params: Any, batch_size: int, seq_len: int
) -> float:
  """Model FLOPs of one optimizer step over batch_size x seq_len tokens."""
  per_token = flops_per_token(cfg, seq_len, matmul_params(cfg, params))
  return per_token["train"] * batch_size * seq_len
