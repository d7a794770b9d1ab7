# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""ModelConfig: every model hyperparameter, frozen and validated.

Built from the `model` section of an ml-collections config by
`ModelConfig.from_config`; every error names the field and the rule, and is
raised before anything is compiled.
"""

import dataclasses
from typing import Any, Mapping, Optional

from routing_jax import config_sections
from routing_jax.nn.modes import (
    DTYPE_NAMES,
    FFNS,
    INIT_MODES,
    NORMS,
    POSITIONS,
    REMAT_POLICIES,
)
from routing_jax.nn.routing_config import RoutingConfig


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
  # The routing heads become plain attention heads over the whole sequence
  # (one block of max_len, the local heads' positions): the same model with
  # its sparse heads made dense, the baseline a routing model must be
  # measured against. O(n^2); routing settings are then unused.
  dense_routing_heads: bool = False
  causal: bool = True
  # What the routing heads do (clusters, window, mode, warm-up, k-means):
  # the object `RoutingAttention` takes (fields: routing_config.py).
  routing: RoutingConfig = RoutingConfig()
  # "relative" (Shaw, the paper's text models), "rope", "none", or
  # "learned2d" (row/column tables, the paper's image models).
  position: str = "relative"
  max_relative_position: int = 65
  image_shape: tuple[int, int, int] = (0, 0, 0)  # (H, W, C); zeros for text
  max_len: int = 1024  # longest sequence (learned positions, decode cache)
  residual_dropout: float = 0.1
  attention_dropout: float = 0.0
  relu_dropout: float = 0.0
  embedding_dropout: float = 0.0
  target_dropout: float = 0.0
  # Gain of the uniform variance-scaling init: the paper's 0.2 over fan_avg
  # (its post-norm models); a pre-norm byte model (4 x 256) learned faster
  # per step with 0.8 (benchmarks/README.md, time to quality).
  # init_mode="fan_in" with init_scale=1/3 is torch's nn.Linear default.
  init_scale: float = 0.2
  init_mode: str = "fan_avg"
  # Activation policy. "bfloat16": matmuls and activations in bf16, while
  # params, optimizer state, softmax, routing scores, k-means and the loss
  # stay float32 (the paper configs); "float32": everything in float32.
  dtype: str = "float32"
  param_dtype: str = "float32"
  scan_layers: bool = False
  remat_policy: str = "none"  # one of modes.REMAT_POLICIES

  def __post_init__(self):
    object.__setattr__(self, "image_shape", tuple(self.image_shape))
    if not isinstance(self.routing, RoutingConfig):
      object.__setattr__(
          self,
          "routing",
          RoutingConfig.from_config(self.routing, "model.routing."),
      )
    self.validate()

  @classmethod
  def from_config(cls, config: Any) -> "ModelConfig":
    """From a ConfigDict / mapping (`routing` nested); unknown keys are an
    error, and names from before the nesting say where they went."""
    items = dict(config.to_dict() if hasattr(config, "to_dict") else config)
    moved = sorted(
        k
        for k in set(items) & set(LEGACY_NAMES)
        if k != "routing" or isinstance(items[k], str)
    )
    if moved:
      where = ", ".join(
          f"{k} -> model.{'.'.join(LEGACY_NAMES[k])}" for k in moved
      )
      raise ValueError(f"model: field(s) moved into model.routing: {where}")
    return config_sections.build(cls, items, "model.", "model.")

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
  def routing_heads_position(self) -> str:
    """The routing heads' positions: routing.position, or the other heads'
    (none for images, whose positions are added to the embeddings)."""
    if self.routing.position is not None:
      return self.routing.position
    return "none" if self.is_image else self.position

  @property
  def routes(self) -> bool:
    """Some layer has routing heads."""
    return any(self.routing_mask()) and self.num_routing_heads > 0

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
    need(self.init_scale > 0, "init_scale", "must be > 0")
    need(
        self.init_mode in INIT_MODES,
        "init_mode",
        f"must be one of {INIT_MODES}",
    )
    need(self.norm in NORMS, "norm", f"must be one of {NORMS}")
    need(self.position in POSITIONS, "position", f"must be one of {POSITIONS}")
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
    self.routing.validate("model.routing.", causal=self.causal)
    try:
      self.routing_mask()
    except ValueError as e:
      raise ValueError(f"model.routing_layers={self.routing_layers!r}: {e}")
    if self.routes and self.routing.mode == "topk":
      if self.routing.window > self.max_len:
        raise ValueError(
            f'model.routing.window={self.routing.window}: mode="topk"'
            f" needs window <= model.max_len={self.max_len}"
        )
    if self.routes and self.routing.implementation == "pallas":
      rule = 'routing.implementation="pallas" (the fused kernel) needs'
      need(
          self.routing_heads_position != "relative",
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
    if "rope" in (self.position, self.routing_heads_position):
      need(
          self.head_dim % 2 == 0,
          "num_heads",
          "RoPE needs an even head_dim (d_model / num_heads)",
      )
    if "relative" in (self.position, self.routing_heads_position):
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


# The routing fields' names before they moved into `model.routing` (and its
# `kmeans`): the model sections of older workdirs (config.json) are read
# through `migrate_legacy`, and checkpoint hashes are computed over these
# names so that older checkpoints still resume.
LEGACY_NAMES = {
    "routing": ("routing", "mode"),
    "num_clusters": ("routing", "num_clusters"),
    "window": ("routing", "window"),
    "share_qk": ("routing", "share_qk"),
    "fit_queries": ("routing", "fit_queries"),
    "exclude_self": ("routing", "exclude_self"),
    "routing_warmup_steps": ("routing", "warmup_steps"),
    "routing_warmup_window": ("routing", "warmup_window"),
    "routing_warmup": ("routing", "warmup"),
    "routing_logit_scale": ("routing", "logit_scale"),
    "routing_position": ("routing", "position"),
    "routing_implementation": ("routing", "implementation"),
    "kmeans_decay": ("routing", "kmeans", "decay"),
    "commitment_weight": ("routing", "kmeans", "commitment_weight"),
    "kmeans_data_init": ("routing", "kmeans", "data_init"),
    "kmeans_revive_threshold": ("routing", "kmeans", "revive_threshold"),
}


def migrate_legacy(model: Mapping[str, Any]) -> dict[str, Any]:
  """A model section with the flat routing names of older versions ->
  the nested form (unchanged if it has none)."""
  model = dict(model)
  if not isinstance(model.get("routing", {}), str) and not (
      set(model) & (set(LEGACY_NAMES) - {"routing"})
  ):
    return model
  routing: dict[str, Any] = {"kmeans": {}}
  for old, path in LEGACY_NAMES.items():
    if old in model:
      section = routing if len(path) == 2 else routing["kmeans"]
      section[path[-1]] = model.pop(old)
  model["routing"] = routing
  return model


def dotted(model: Mapping[str, Any]) -> dict[str, Any]:
  """A nested model section (as a dict) -> {"routing.window": 64, ...}."""
  out = {}
  for key, value in model.items():
    if isinstance(value, Mapping):
      out.update({f"{key}.{k}": v for k, v in dotted(value).items()})
    else:
      out[key] = value
  return out


_LEGACY_BY_PATH = {".".join(path): old for old, path in LEGACY_NAMES.items()}


def legacy_flat(model: Mapping[str, Any]) -> dict[str, Any]:
  """`dotted(model)` with the flat names older versions wrote; fields
  that had none keep their dotted path (`routing.kmeans.epsilon`)."""
  return {_LEGACY_BY_PATH.get(k, k): v for k, v in dotted(model).items()}
