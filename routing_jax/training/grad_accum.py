# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Microbatch gradients summed per data replica, reduced across them once.

Under plain GSPMD a gradient computed on a batch split over "data" is
all-reduced where it is computed, so a loop over microbatches all-reduces
every microbatch's gradient (traffic x microbatches). Here the loss is
vmapped over a leading replica axis laid on the "data" mesh axis: replica
r computes the gradient of its own rows only, the microbatch loop adds
these [replicas, ...] partial gradients where they are, and one sum over
the replica axis after the loop is the step's only gradient all-reduce.
Inside a replica the batch still splits over "fsdp", whose reduce-scatter
stays per microbatch (keeping unreduced gradients instead would cost a
whole copy of them per device).

Everything in the model that reduces over the batch must also cover the
other replicas' rows: k-means reads the axis name from
`kmeans_ops.cross_replica`; loss sums are added up by the caller.
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

from routing_jax.nn import kmeans_ops

REPLICA_AXIS = "replicas"  # the vmapped axis
DATA_AXIS = "data"  # the mesh axis it is laid on


def split_microbatches(batch: Any, accum_steps: int, replicas: int) -> Any:
  """[B, ...] -> [accum_steps, replicas, B / (accum_steps·replicas), ...].

  Microbatch i of replica r takes rows r·B/R + i, + i + A, ... of the
  replica's own block (A = accum_steps): a device's rows stay on it, and
  microbatch i holds the same rows, in the same order, for any R.
  """

  def one(a):
    rows = a.shape[0] // (replicas * accum_steps)
    a = a.reshape((replicas, rows, accum_steps) + a.shape[1:])
    return jnp.moveaxis(a, 2, 0)

  return jax.tree.map(one, batch)


def replica_rules(rules: Any) -> tuple[tuple[str, Any], ...]:
  """Logical axis rules inside a replica: nothing maps to "data"."""
  out = []
  for name, axes in rules:
    if isinstance(axes, (tuple, list)):
      axes = tuple(a for a in axes if a != DATA_AXIS) or None
    elif axes == DATA_AXIS:
      axes = None
    out.append((name, axes))
  return tuple(out)


def per_replica(fn: Callable[..., Any]) -> Callable[..., Any]:
  """vmaps fn(params, state, batch, key) over the replica axis of batch.

  params and state are shared; each replica gets its own dropout key;
  k-means statistics sum over replicas. Every output gains a leading
  replica axis (on the "data" mesh axis).
  """
  rules = replica_rules(nn.get_logical_axis_rules())

  def one(params, state, batch, key):
    key = jax.random.fold_in(key, jax.lax.axis_index(REPLICA_AXIS))
    with kmeans_ops.cross_replica(REPLICA_AXIS), nn.logical_axis_rules(rules):
      return fn(params, state, batch, key)

  return jax.vmap(
      one,
      in_axes=(None, None, 0, None),
      axis_name=REPLICA_AXIS,
      spmd_axis_name=DATA_AXIS,
  )


def replica_shardings(param_shardings: Any) -> Any:
  """Shardings of per-replica gradients: the param's, plus "data" first."""
  return jax.tree.map(
      lambda s: NamedSharding(s.mesh, P(DATA_AXIS, *s.spec)), param_shardings
  )
