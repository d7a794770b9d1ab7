# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""dense_dot_general: the same values and gradients as lax.dot_general."""

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from routing_jax.nn import dense_dot
from routing_jax.nn import layers

DENSE = lambda x: (((x.ndim - 1,), (0,)), ((), ()))


def _grads(dot, x, w, **kw):
  # A non-uniform cotangent, so a transposed or mis-summed gradient shows.
  def loss(x, w):
    y = dot(x, w, DENSE(x), **kw).astype(jnp.float32)
    return jnp.sum(jnp.sin(y) * jnp.arange(y.shape[-1]))

  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(x, w)


@pytest.mark.parametrize(
    "x_shape, w_shape",
    [
        ((2, 5, 3), (3, 7)),  # a < b: dW = xᵀ·dy
        ((2, 5, 7), (7, 3)),  # a > b: dW = (dyᵀ·x)ᵀ
        ((6, 4), (4, 4)),
    ],
)
def test_float32_equals_lax(x_shape, w_shape):
  kx, kw = jax.random.split(jax.random.key(0))
  x = jax.random.normal(kx, x_shape)
  w = jax.random.normal(kw, w_shape)
  v_ref, (dx_ref, dw_ref) = _grads(lax.dot_general, x, w)
  v, (dx, dw) = _grads(dense_dot.dense_dot_general, x, w)
  np.testing.assert_allclose(v, v_ref, rtol=1e-6)
  np.testing.assert_allclose(dx, dx_ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(dw, dw_ref, rtol=1e-5, atol=1e-6)
  assert dx.dtype == x.dtype and dw.dtype == w.dtype


def test_bfloat16_with_float32_output():
  kx, kw = jax.random.split(jax.random.key(1))
  x = jax.random.normal(kx, (3, 8, 16)).astype(jnp.bfloat16)
  w = jax.random.normal(kw, (16, 32)).astype(jnp.bfloat16)
  kw_args = dict(preferred_element_type=jnp.float32)
  v_ref, (dx_ref, dw_ref) = _grads(lax.dot_general, x, w, **kw_args)
  v, (dx, dw) = _grads(dense_dot.dense_dot_general, x, w, **kw_args)
  assert dx.dtype == jnp.bfloat16 and dw.dtype == jnp.bfloat16
  np.testing.assert_allclose(v, v_ref, rtol=1e-6)
  f32 = lambda a: np.asarray(a, np.float32)
  np.testing.assert_allclose(f32(dx), f32(dx_ref), rtol=2e-2, atol=2e-2)
  np.testing.assert_allclose(f32(dw), f32(dw_ref), rtol=2e-2, atol=2e-2)


def test_other_contractions_fall_back_to_lax():
  x = jnp.arange(24.0).reshape(2, 3, 4)
  w = jnp.arange(12.0).reshape(3, 4)
  dims = (((1, 2), (0, 1)), ((), ()))
  np.testing.assert_array_equal(
      dense_dot.dense_dot_general(x, w, dims), lax.dot_general(x, w, dims)
  )


def test_vmapped_and_in_the_dense_layer():
  """layers.dense uses it; under vmap its gradients match nn.Dense's."""
  x = jax.random.normal(jax.random.key(2), (3, 4, 6))  # vmapped over axis 0
  ours = layers.dense(
      5,
      ("embed", "mlp"),
      use_bias=True,
      kernel_init=nn.initializers.lecun_normal(),
      dtype=jnp.float32,
      param_dtype=jnp.float32,
      name=None,
  )
  plain = nn.Dense(5)
  params = nn.unbox(ours.init(jax.random.key(3), x[0]))

  def grads(module):
    loss = lambda p, xi: jnp.sum(jnp.cos(module.apply(p, xi)))
    return jax.vmap(jax.grad(loss), in_axes=(None, 0))(params, x)

  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
      grads(ours),
      grads(plain),
  )
  assert ours.dot_general is dense_dot.dense_dot_general
