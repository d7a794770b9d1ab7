# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Gradient accumulation reduces gradients across data replicas once a step.

Read from the compiled train step's HLO: every all-reduce, its bytes, and
how many times it runs (loop trip counts multiplied in). On a data=4 mesh
the step with 2 microbatches must all-reduce the gradients once, after the
microbatch loop, like the step without accumulation; only the k-means
statistics and loss sums are all-reduced per microbatch. (A tensor axis
adds activation all-reduces to every microbatch, with or without
accumulation: that is tensor parallelism, not gradient traffic.)
"""

import re

import flax.linen as nn
import jax
import numpy as np

from routing_jax.training import sharding
from routing_jax.training import train

import train_test  # the tiny config and helpers

_BYTES = {
    "f32": 4,
    "s32": 4,
    "u32": 4,
    "bf16": 2,
    "f16": 2,
    "pred": 1,
    "s8": 1,
    "u8": 1,
}


def _shape_bytes(text):
  total = 0
  for dtype, dims in re.findall(r"\b([a-z]+\d*)\[([\d,]*)\]", text):
    if dtype in _BYTES:
      total += int(np.prod([int(d) for d in dims.split(",") if d])) * (
          _BYTES[dtype]
      )
  return total


def all_reduces(hlo: str) -> list[tuple[int, int]]:
  """[(bytes, executions per step)] of every all-reduce in compiled HLO."""
  comps, name = {}, None
  for line in hlo.splitlines():
    m = re.match(r"^(?:ENTRY )?%(\S+) \(", line)
    if m:
      name = m.group(1)
      comps[name] = []
      if line.startswith("ENTRY"):
        entry = name
    elif name is not None:
      comps[name].append(line)
  runs = {entry: 1}
  order = [entry]
  while order:  # calling computations before the ones they call
    comp = order.pop()
    for line in comps[comp]:
      trips = re.search(r'"known_trip_count":\{"n":"(\d+)"', line)
      for callee in re.findall(
          r"(?:body|calls|to_apply|condition)=%(\S+?)[,\s}]", line
      ):
        times = (
            int(trips.group(1)) if trips and "body=%" + callee in line else 1
        )
        if callee in comps and callee not in runs:
          runs[callee] = runs[comp] * times
          order.append(callee)
  out = []
  for comp, lines in comps.items():
    for line in lines:
      if " all-reduce(" in line or " all-reduce-start(" in line:
        result = line.split(" = ", 1)[1].split(" all-reduce")[0]
        out.append((_shape_bytes(result), runs.get(comp, 1)))
  return out


def _config():
  """The tiny config (2 layers, 2 routing heads of 2 clusters each), with
  k-means on. Without data-initialised centroids, whose random picks depend
  on how a batch is split, accumulation can be compared exactly."""
  config = train_test._config()  # pylint: disable=protected-access
  config.model.routing.kmeans.data_init = False
  return config


def _compiled_hlo(accum):
  config = _config()
  config.train.grad_accum_steps = accum
  mesh = train_test._mesh(4, 1, 1)  # pylint: disable=protected-access
  trainer, state = train.build_trainer(
      config, mesh, sharding.logical_rules(), train.validate_config(config)
  )
  batch = sharding.make_global_batch(
      train_test._batches(config, 1)[0], mesh, trainer.data_sharding
  )  # pylint: disable=protected-access
  params = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state.params))
  with jax.set_mesh(mesh), nn.logical_axis_rules(trainer.rules):
    hlo = trainer.train_step.lower(state, batch).compile().as_text()
  return all_reduces(hlo), params


def test_gradients_are_all_reduced_once_per_step():
  one, param_bytes = _compiled_hlo(1)
  two, _ = _compiled_hlo(2)
  big = lambda ars: [(b, n) for b, n in ars if b >= param_bytes // 2]
  looped = [(b, n) for b, n in two if n > 1]
  print(
      f"\nparams {param_bytes} B; all-reduces (bytes, runs): no accumulation"
      f" {sorted(one)}; 2 microbatches {sorted(two)}"
  )
  # The gradients: one all-reduce of about the parameters' size, run once,
  # with or without accumulation.
  assert len(big(one)) == len(big(two)) == 1
  assert big(two)[0][1] == 1
  # Inside the microbatch loop: k-means statistics and loss sums only.
  assert looped and sum(b for b, _ in looped) < 0.05 * param_bytes
  executed = lambda ars: sum(b * n for b, n in ars)
  assert executed(two) <= executed(one) + sum(b for b, _ in looped)


def test_accumulated_step_equals_the_full_batch_step_on_a_mesh():
  """grad_accum_steps=2 equals 1 on the same batches, on 4 data replicas,
  with k-means on: every microbatch is routed with the step's centroids and
  the summed statistics update them once, so loss, gradient norm,
  parameters and the whole k-means state agree to float32 rounding."""
  config = _config()
  assert config.model.residual_dropout == 0.0
  batches = train_test._batches(config, 2)  # pylint: disable=protected-access
  mesh = train_test._mesh(4, 1, 1)  # pylint: disable=protected-access
  init, full, m_full, _ = train_test._train(config, mesh, batches)  # pylint: disable=protected-access
  config.train.grad_accum_steps = 2
  _, acc, m_acc, _ = train_test._train(config, mesh, batches)  # pylint: disable=protected-access
  for k in ("loss", "grad_norm", "tokens"):
    np.testing.assert_allclose(
        [m[k] for m in m_acc], [m[k] for m in m_full], rtol=2e-6, err_msg=k
    )
  # Adam's early steps are about ±lr (3e-3) per element whatever a
  # gradient's size, so float noise in a near-zero gradient element can
  # move that element by up to lr; a wrong gradient moves most elements.
  diffs = np.concatenate([
      np.abs(np.asarray(a) - np.asarray(b)).ravel()
      for a, b in zip(jax.tree.leaves(acc.params), jax.tree.leaves(full.params))
  ])
  assert np.mean(diffs > 1e-6) < 1e-3 and diffs.max() < 1e-3
  # Real steps were taken: the parameters moved.
  moved = np.abs(
      np.asarray(full.params["logits"]["kernel"])
      - init.params["logits"]["kernel"]
  ).max()
  assert moved > 1e-3
  # Routing is not trivial here: real clusters, and the state moved.
  state = lambda s: s.kmeans["layer_0"]["routing"]["kmeans"]
  assert np.abs(state(full)["ema_count"] - state(init)["ema_count"]).max() > 0.1
  assert int(state(full)["num_updates"][0]) == 2
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
      acc.kmeans,
      full.kmeans,
  )
