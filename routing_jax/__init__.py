"""routing-jax: the Routing Transformer (Roy et al., TACL 2021) in JAX/Flax.

Layout: `routing_jax.nn` (the model), `routing_jax.data` (input),
`routing_jax.training` (train step, loop, checkpoints); the command-line
programs (`python -m routing_jax.main | evaluate | sample | dryrun`) stay at
the top level.

Public API:
  LocalAttention    blocked local attention (query block, memory flange)
  RoutingAttention  k-means routing attention, routing="causal" | "topk"
  KMeans            centroid state and its EMA update (collection "kmeans")
  ModelConfig       frozen dataclass of every model hyperparameter
  TransformerLM     decoder-only model over tokens and image sub-pixels
  generate          sampling with a cache: temperature, top-k, top-p, EOS
"""

from routing_jax.nn.kmeans import KMeans
from routing_jax.nn.local_attention import LocalAttention
from routing_jax.nn.model import TransformerLM
from routing_jax.nn.model_config import ModelConfig
from routing_jax.nn.routing_attention import RoutingAttention

__all__ = ["KMeans", "LocalAttention", "RoutingAttention", "ModelConfig",
           "TransformerLM", "generate"]


def __getattr__(name):
  # nn/decoding.py is written separately and never imports the model.
  if name == "generate":
    from routing_jax.nn.decoding import generate  # pylint: disable=g-import-not-at-top
    return generate
  raise AttributeError(name)
