"""routing-jax: the Routing Transformer (Roy et al., TACL 2021) in JAX/Flax.

Public API (names fixed by design.md §3):
  LocalAttention    blocked local attention (query block, memory flange)
  RoutingAttention  k-means routing attention, routing="causal" | "topk"
  KMeans            centroid state and its EMA update (collection "kmeans")
"""

from routing_jax.kmeans import KMeans
from routing_jax.local_attention import LocalAttention
from routing_jax.routing_attention import RoutingAttention

__all__ = ["KMeans", "LocalAttention", "RoutingAttention"]
