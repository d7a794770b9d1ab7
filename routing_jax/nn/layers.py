# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Dense, norm, feed-forward and embedding pieces with logical axis names."""

import functools
from typing import Any, Callable, Optional

import flax.linen as nn
import jax.numpy as jnp

from routing_jax.common_types import Array
from routing_jax.nn import dense_dot


def layer_norm(dtype: Any, param_dtype: Any, name: str) -> nn.LayerNorm:
  """LayerNorm with the reference's ε = 1e-6 and named parameters."""
  return nn.LayerNorm(
      epsilon=1e-6,
      dtype=dtype,
      param_dtype=param_dtype,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
      name=name,
  )


def dense(
    features: int,
    axes: tuple[str, str],
    *,
    use_bias: bool,
    kernel_init: Callable[..., Array],
    dtype: Any,
    param_dtype: Any,
    name: Optional[str],
    float32_output: bool = False,
) -> nn.Dense:
  """nn.Dense with logical axis names on kernel and bias.

  float32_output: accumulate and return float32 whatever `dtype` is (for
  logits, whose softmax must not see bf16 rounding).
  """
  dot = (
      functools.partial(
          dense_dot.dense_dot_general, preferred_element_type=jnp.float32
      )
      if float32_output
      else dense_dot.dense_dot_general
  )
  return nn.Dense(
      features,
      use_bias=use_bias,
      dtype=dtype,
      param_dtype=param_dtype,
      dot_general=dot,
      kernel_init=nn.with_logical_partitioning(kernel_init, axes),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axes[1],)),
      name=name,
  )


class FeedForward(nn.Module):
  """GEGLU without biases (the text models) or ReLU with biases (images).

  geglu: W3·(gelu_tanh(W1 x) ⊙ W2 x); relu: W2·relu(W1 x + b1) + b2.
  `dropout` acts on the hidden layer (the reference's relu_dropout);
  `use_bias` overrides the kind's default (geglu: no biases, relu: biases).

  x: [batch, length, embed] -> [batch, length, embed].
  """

  d_ff: int
  kind: str = "geglu"
  dropout: float = 0.0
  kernel_init: Callable[..., Array] = nn.initializers.lecun_normal()
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  use_bias: Optional[bool] = None

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    d = x.shape[-1]
    bias = (self.kind == "relu") if self.use_bias is None else self.use_bias
    make_dense = lambda f, axes, bias, name: dense(
        f,
        axes,
        use_bias=bias,
        kernel_init=self.kernel_init,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        name=name,
    )
    if self.kind == "geglu":
      h = nn.gelu(
          make_dense(self.d_ff, ("embed", "mlp"), bias, "wi_gate")(x),
          approximate=True,
      ) * make_dense(self.d_ff, ("embed", "mlp"), bias, "wi_linear")(x)
    elif self.kind == "relu":
      h = nn.relu(make_dense(self.d_ff, ("embed", "mlp"), bias, "wi")(x))
    else:
      raise ValueError(f"ffn must be 'geglu' or 'relu', got {self.kind!r}")
    # The hidden layer follows the "mlp" kernels' sharding (see
    # attention_core.HEAD_ACTIVATION_AXES).
    h = nn.with_logical_constraint(
        h, ("activation_batch", "activation_length", "activation_mlp")
    )
    h = nn.Dropout(self.dropout)(h, deterministic=not train)
    return make_dense(d, ("mlp", "embed"), bias, "wo")(h)


class TextEmbed(nn.Module):
  """Token table [vocab, E] (no √E scaling), then E -> H with a bias if E≠H.

  `dropout` acts on the E-dimensional rows, before the projection.
  tokens: [batch, length] int32 -> [batch, length, H].
  """

  vocab_size: int
  emb_dim: int
  d_model: int
  kernel_init: Callable[..., Array] = nn.initializers.lecun_normal()
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  dropout: float = 0.0

  def setup(self):
    self.drop = nn.Dropout(self.dropout)
    # A factorised table's columns are the small "emb" axis, not "embed".
    cols = "embed" if self.emb_dim == self.d_model else "emb"
    self.table = self.param(
        "embedding",
        nn.with_logical_partitioning(self.kernel_init, ("vocab", cols)),
        (self.vocab_size, self.emb_dim),
        self.param_dtype,
    )
    if self.emb_dim != self.d_model:
      self.proj = dense(
          self.d_model,
          ("emb", "embed"),
          use_bias=True,
          kernel_init=self.kernel_init,
          dtype=self.dtype,
          param_dtype=self.param_dtype,
          name="emb_dense",
      )

  def __call__(self, tokens: Array, train: bool = False) -> Array:
    x = jnp.asarray(self.table, self.dtype)[tokens]
    x = self.drop(x, deterministic=not train)
    if self.emb_dim != self.d_model:
      x = self.proj(x)
    return x

  def attend(self, x: Array) -> Array:
    """Tied output: [batch, length, E] -> logits [batch, length, vocab]."""
    return jnp.einsum(
        "bne,ve->bnv",
        x.astype(self.dtype),
        jnp.asarray(self.table, self.dtype),
        preferred_element_type=jnp.float32,
    )


class ImageEmbed(nn.Module):
  """Sub-pixel embeddings for images in raster order (docs/paper.md §3.3).

  A per-channel table [256·C, H] scaled by √H embeds the previous sub-pixel
  (the input at position i is the target at i−1, whose channel is
  (i−1) mod C; position 0 is the zero start vector), plus learned row and
  column tables [H_img, C, H] and [W_img, C, H] for the position i being
  predicted, initialised N(0, 1).

  tokens: [batch, length] int32, positions: [length] or [batch, length].
  """

  image_shape: tuple[int, int, int]
  d_model: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens: Array, positions: Array) -> Array:
    hh, ww, cc = self.image_shape
    d = self.d_model
    table = self.param(
        "subpixel_embedding",
        nn.with_logical_partitioning(
            nn.initializers.normal(d**-0.5), ("vocab", "embed")
        ),
        (256 * cc, d),
        self.param_dtype,
    )
    rows = self.param(
        "row_embedding",
        nn.with_logical_partitioning(
            nn.initializers.normal(1.0), ("image_rows", "channels", "embed")
        ),
        (hh, cc, d),
        self.param_dtype,
    )
    cols = self.param(
        "col_embedding",
        nn.with_logical_partitioning(
            nn.initializers.normal(1.0), ("image_cols", "channels", "embed")
        ),
        (ww, cc, d),
        self.param_dtype,
    )
    positions = jnp.broadcast_to(positions, tokens.shape)
    prev_channel = (positions - 1) % cc
    tok = jnp.asarray(table, self.dtype)[prev_channel * 256 + tokens]
    tok = tok * jnp.asarray(d**0.5, self.dtype)
    tok = tok * (positions > 0)[..., None].astype(self.dtype)
    ch = positions % cc
    row = positions // (ww * cc)
    col = (positions // cc) % ww
    pos = (
        jnp.asarray(rows, self.dtype)[row, ch]
        + jnp.asarray(cols, self.dtype)[col, ch]
    )
    return tok + pos
