# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""routing-jax: the Routing Transformer (Roy et al., TACL 2021) in JAX/Flax.

Layout: `routing_jax.nn` (the model), `routing_jax.data` (input),
`routing_jax.training` (train step, loop, checkpoints); the command-line
programs (`python -m routing_jax.main | evaluate | sample | dryrun`) stay at
the top level.

Public API:
  LocalAttention    blocked local attention (query block, memory flange)
  RoutingAttention  k-means routing attention (mode "causal" | "topk")
  RoutingConfig     what routing heads do: RoutingAttention's `config` and
                    ModelConfig's `routing`
  KMeansConfig      the k-means settings (RoutingConfig's `kmeans`)
  KMeans            centroid state and its EMA update (collection "kmeans")
  ModelConfig       frozen dataclass of every model hyperparameter
  TransformerLM     decoder-only model over tokens and image sub-pixels
  generate          sampling with a cache: temperature, top-k, top-p, EOS
  load              (model, variables) of a training run's workdir

The names load on first use, so that jax-free modules (the config defaults
and mode names the experiment files read) import without jax.
"""

import importlib

_EXPORTS = {
    "KMeans": "routing_jax.nn.kmeans",
    "LocalAttention": "routing_jax.nn.local_attention",
    "RoutingAttention": "routing_jax.nn.routing_attention",
    "RoutingConfig": "routing_jax.nn.routing_config",
    "KMeansConfig": "routing_jax.nn.routing_config",
    "ModelConfig": "routing_jax.nn.model_config",
    "TransformerLM": "routing_jax.nn.model",
    "generate": "routing_jax.nn.decoding",
    "load": "routing_jax.training.loading",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
  if name in _EXPORTS:
    return getattr(importlib.import_module(_EXPORTS[name]), name)
  raise AttributeError(f"module 'routing_jax' has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + __all__)
