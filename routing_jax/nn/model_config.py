# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""ModelConfig: every model hyperparameter, frozen and validated.

Built from the `model` section of an ml-collections config by
`ModelConfig.from_config`; every error names the field and the rule, and is
raised before anything is compiled.
"""

import dataclasses
from typing import Any, Mapping, Optional

from routing_jax.nn.modes import (
    ATTENTION_POSITIONS,
    DTYPE_NAMES,
    FFNS,
    NORMS,
    POSITIONS,
    REMAT_POLICIES,
    ROUTING_IMPLEMENTATIONS,
    ROUTINGS,
    WARMUPS,
)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Hyperparameters of TransformerLM: the one place their defaults live.

  `experiments/common.base_config()` builds the config's `model` section
  from these fields, so an experiment file sets only what differs.
  """

  vocab_size: int = 256  # bytes; images use 256 sub-pixel values
  # Embedding and output rows are padded to a multiple of this (128: the
  # vocabulary splits over `tensor`); padded entries get zero probability.
  vocab_multiple: int = 1
  num_layers: int = 2
  d_model: int = 128  # hidden size H
  emb_dim: int = 0  # factorised embedding size E (0: no factorisation)
  num_heads: int = 4  # heads per layer (local + routing)
  num_routing_heads: int = 2  # of num_heads, in the layers that route
  # Which layers route: "all", "none", "last:N", "skip_first:N" or "0,3,5".
  routing_layers: str = "all"
  d_ff: int = 512
  ffn: str = "geglu"  # "geglu" (text, no biases) or "relu" (images, biases)
  # Biases in the feed-forward layers; None: the ffn kind's default above.
  ffn_bias: Optional[bool] = None
  norm: str = "post"  # "post" (the paper's LN(x + f(x))) or "pre"
  tie_embeddings: bool = False  # the paper's output layer is untied
  query_block: int = 64  # local attention query block q
  memory_flange: int = 64  # local attention memory flange m
  routing: str = "causal"  # "causal" (exactly causal) or "topk" (the paper's)
  # The routing heads become plain attention heads over the whole sequence
  # (one block of max_len, the local heads' positions): the same model with
  # its sparse heads made dense, the baseline a routing model must be
  # measured against. O(n^2); routing settings are then unused.
  dense_routing_heads: bool = False
  causal: bool = True
  num_clusters: int = 4  # k
  window: int = 64  # w: keys a routing query may see in its cluster
  share_qk: bool = True
  # Separate Q/K: centroids fitted to queries and keys (True, the paper's
  # code) or to the keys only, each query going to the key cluster it
  # matches best (False); None: False for causal routing, True for topk.
  fit_queries: Optional[bool] = None
  # Causal routing: a query never sees its own key (a query with nothing
  # else visible outputs 0). Not available with routing="topk".
  exclude_self: bool = False
  # Routing heads attend to every earlier token (or the last
  # routing_warmup_window, 0: all) until the k-means has taken this many
  # updates: routing needs queries and keys that already agree. Causal
  # models only (either routing mode).
  routing_warmup_steps: int = 0
  routing_warmup_window: int = 0
  # "dense" (as above) or "random": causal routing over random clusters of
  # about `window` tokens, drawn afresh each step, at a routed step's cost.
  routing_warmup: str = "dense"
  routing_logit_scale: float = 1.0  # LN(q)·LN(k) scale; 1.0 is the paper's
  # Causal routing core: "xla" or "pallas" (fused GPU kernels; no relative
  # positions or attention dropout; docs/kernels.md).
  routing_implementation: str = "xla"
  kmeans_decay: float = 0.999
  commitment_weight: float = 1e-4  # beta
  # Centroids from the first batch's vectors, and revival of clusters whose
  # share falls under the threshold; None: the routing mode's default.
  kmeans_data_init: Optional[bool] = None
  kmeans_revive_threshold: Optional[float] = None
  # "relative" (Shaw, the paper's text models), "rope", "none", or
  # "learned2d" (row/column tables, the paper's image models).
  position: str = "relative"
  # Positions of the routing heads; None follows `position` (relative:
  # distances between members of a cluster; learned2d: none).
  routing_position: Optional[str] = None
  max_relative_position: int = 65
  image_shape: tuple[int, int, int] = (0, 0, 0)  # (H, W, C); zeros for text
  max_len: int = 1024  # longest sequence (learned positions, decode cache)
  residual_dropout: float = 0.1
  attention_dropout: float = 0.0
  relu_dropout: float = 0.0
  embedding_dropout: float = 0.0
  target_dropout: float = 0.0
  init_scale: float = 0.2  # gain of the uniform variance-scaling init
  # Activation policy. "bfloat16": matmuls and activations in bf16, while
  # params, optimizer state, softmax, routing scores, k-means and the loss
  # stay float32 (the paper configs); "float32": everything in float32.
  dtype: str = "float32"
  param_dtype: str = "float32"
  scan_layers: bool = False
  remat_policy: str = "none"  # one of modes.REMAT_POLICIES

  def __post_init__(self):
    object.__setattr__(self, "image_shape", tuple(self.image_shape))
    self.validate()

  @classmethod
  def from_config(cls, config: Any) -> "ModelConfig":
    """From a ConfigDict / mapping; unknown keys are an error."""
    items = dict(config.to_dict() if hasattr(config, "to_dict") else config)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(items) - known)
    if unknown:
      raise ValueError(f"model: unknown field(s) {unknown}")
    return cls(**items)

  def replace(self, **kw) -> "ModelConfig":
    return dataclasses.replace(self, **kw)

  @property
  def padded_vocab_size(self) -> int:
    """vocab_size rounded up to vocab_multiple (table and output rows)."""
    m = self.vocab_multiple
    return -(-self.vocab_size // m) * m

  @property
  def head_dim(self) -> int:
    return self.d_model // self.num_heads

  @property
  def embed_dim(self) -> int:
    return self.emb_dim or self.d_model

  @property
  def is_image(self) -> bool:
    return self.position == "learned2d"

  @property
  def jnp_dtype(self):
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

    return jnp.dtype(self.dtype)

  @property
  def jnp_param_dtype(self):
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

    return jnp.dtype(self.param_dtype)

  def routing_mask(self) -> tuple[bool, ...]:
    """Per layer: does it have routing heads?"""
    return parse_routing_layers(self.routing_layers, self.num_layers)

  def validate(self) -> None:
    def need(cond, field, rule):
      if not cond:
        raise ValueError(f"model.{field}={getattr(self, field)!r}: {rule}")

    for f in (
        "vocab_size",
        "vocab_multiple",
        "num_layers",
        "d_model",
        "num_heads",
        "d_ff",
        "query_block",
        "max_len",
    ):
      need(getattr(self, f) >= 1, f, "must be >= 1")
    need(
        self.d_model % self.num_heads == 0,
        "num_heads",
        f"must divide model.d_model={self.d_model}",
    )
    need(
        0 <= self.num_routing_heads <= self.num_heads,
        "num_routing_heads",
        f"must be in [0, model.num_heads={self.num_heads}]",
    )
    need(self.emb_dim >= 0, "emb_dim", "must be >= 0 (0: same as d_model)")
    need(
        self.memory_flange >= 0 and self.memory_flange % self.query_block == 0,
        "memory_flange",
        "must be a non-negative multiple of model.query_block="
        f"{self.query_block}",
    )
    need(self.ffn in FFNS, "ffn", f"must be one of {FFNS}")
    need(self.norm in NORMS, "norm", f"must be one of {NORMS}")
    need(self.routing in ROUTINGS, "routing", f"must be one of {ROUTINGS}")
    need(
        not (self.routing == "causal" and not self.causal),
        "routing",
        'routing="causal" requires model.causal=True',
    )
    need(self.position in POSITIONS, "position", f"must be one of {POSITIONS}")
    need(
        self.routing_position in (None,) + ATTENTION_POSITIONS,
        "routing_position",
        f"must be None or one of {ATTENTION_POSITIONS}",
    )
    need(self.dtype in DTYPE_NAMES, "dtype", f"must be one of {DTYPE_NAMES}")
    need(
        self.param_dtype in DTYPE_NAMES,
        "param_dtype",
        f"must be one of {DTYPE_NAMES}",
    )
    need(
        self.remat_policy in REMAT_POLICIES,
        "remat_policy",
        f"must be one of {REMAT_POLICIES}",
    )
    for f in (
        "residual_dropout",
        "attention_dropout",
        "relu_dropout",
        "embedding_dropout",
        "target_dropout",
    ):
      need(0.0 <= getattr(self, f) < 1.0, f, "must be in [0, 1)")
    need(0.0 <= self.kmeans_decay < 1.0, "kmeans_decay", "must be in [0, 1)")
    need(self.routing_warmup_steps >= 0, "routing_warmup_steps", "must be >= 0")
    need(
        self.routing_warmup_window >= 0,
        "routing_warmup_window",
        "must be >= 0 (0: the whole sequence)",
    )
    need(
        self.routing_warmup in WARMUPS,
        "routing_warmup",
        f"must be one of {WARMUPS}",
    )
    need(
        self.routing_warmup == "dense" or self.routing == "causal",
        "routing_warmup",
        '"random" needs routing="causal"',
    )
    need(
        self.routing_warmup == "dense" or not self.routing_warmup_window,
        "routing_warmup_window",
        'applies to routing_warmup="dense" only',
    )
    need(
        not (self.routing_warmup_steps and not self.causal),
        "routing_warmup_steps",
        "needs causal=True (the warm-up is dense causal attention)",
    )
    need(
        not (self.exclude_self and self.routing == "topk"),
        "exclude_self",
        'applies to routing="causal" only (top-k routing has no such mask)',
    )
    try:
      mask = self.routing_mask()
    except ValueError as e:
      raise ValueError(f"model.routing_layers={self.routing_layers!r}: {e}")
    if any(mask) and self.num_routing_heads > 0:
      need(self.window >= 1, "window", "must be >= 1")
      need(self.num_clusters >= 1, "num_clusters", "must be >= 1")
      if self.routing == "topk":
        need(
            self.window <= self.max_len,
            "window",
            f'routing="topk" needs window <= model.max_len={self.max_len}',
        )
    need(
        self.routing_implementation in ROUTING_IMPLEMENTATIONS,
        "routing_implementation",
        f"must be one of {ROUTING_IMPLEMENTATIONS}",
    )
    if (
        self.routing_implementation == "pallas"
        and any(mask)
        and self.num_routing_heads > 0
    ):
      rule = 'routing_implementation="pallas" (the fused kernel) needs'
      need(self.routing == "causal", "routing", f'{rule} routing="causal"')
      need(
          self.position != "relative",
          "position",
          f"{rule} no relative position tables",
      )
      need(
          self.attention_dropout == 0.0,
          "attention_dropout",
          f"{rule} no attention dropout",
      )
      need(
          self.head_dim & (self.head_dim - 1) == 0,
          "num_heads",
          f"{rule} a power-of-2 head_dim (d_model / num_heads)",
      )
    if self.position == "rope":
      need(
          self.head_dim % 2 == 0,
          "num_heads",
          "RoPE needs an even head_dim (d_model / num_heads)",
      )
    if self.position == "relative":
      need(
          self.max_relative_position >= 1,
          "max_relative_position",
          "must be >= 1",
      )
    if self.is_image:
      need(
          len(self.image_shape) == 3 and min(self.image_shape) >= 1,
          "image_shape",
          "must be (height, width, channels), all >= 1",
      )
      hh, ww, cc = self.image_shape
      need(
          hh * ww * cc == self.max_len,
          "image_shape",
          f"H·W·C = {hh * ww * cc} must equal model.max_len={self.max_len}",
      )
      need(
          self.vocab_size == 256,
          "vocab_size",
          "image models predict 256 sub-pixel values",
      )
      need(
          not self.tie_embeddings,
          "tie_embeddings",
          "image models have an untied 256-way output",
      )
    else:
      need(
          not any(self.image_shape),
          "image_shape",
          'set only with model.position="learned2d"',
      )


def parse_routing_layers(spec: str, num_layers: int) -> tuple[bool, ...]:
  """ "all", "none", "last:N", "skip_first:N" or "i,j,k" -> per-layer flags."""
  spec = str(spec).strip()
  if spec == "all":
    return (True,) * num_layers
  if spec == "none":
    return (False,) * num_layers
  for prefix in ("last:", "skip_first:"):
    if spec.startswith(prefix):
      try:
        count = int(spec[len(prefix) :])
      except ValueError:
        raise ValueError(f"{prefix}N needs an integer N") from None
      if not 0 <= count <= num_layers:
        raise ValueError(f"N must be in [0, {num_layers}] (num_layers)")
      first = num_layers - count if prefix == "last:" else count
      return tuple(i >= first for i in range(num_layers))
  try:
    idx = [int(s) for s in spec.split(",") if s.strip()]
  except ValueError:
    raise ValueError(
        'expected "all", "none", "last:N", "skip_first:N" or a '
        "comma-separated list of layer indices"
    ) from None
  bad = [i for i in idx if not 0 <= i < num_layers]
  if bad:
    raise ValueError(f"layer index {bad[0]} out of range [0, {num_layers})")
  return tuple(i in idx for i in range(num_layers))


def as_mapping(config: ModelConfig) -> Mapping[str, Any]:
  return dataclasses.asdict(config)
