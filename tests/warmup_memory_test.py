# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The routing warm-up costs no memory once it ends (the dry run's view).

The long Shakespeare config (content routing, dense warm-up) with Shaw
relative positions at 2,048 tokens: the routed step compiled with a warm-up
configured needs what it needs without one, and the warm-up step itself
stays within 2x of it (its attention runs in chunks, nothing [n, n]).
"""

import re

import jax

from experiments import shakespeare
from routing_jax import dryrun


def _temporaries(warmup_steps):
  config = shakespeare.get_config("long")
  config.data.seq_len = config.model.max_len = 2048
  config.model.position = "relative"
  config.model.routing.warmup_steps = warmup_steps
  lines = []
  dryrun.report(config, jax.devices()[:1], out=lines.append)
  found = {}
  for line in lines:
    m = re.match(
        r"compiled (train|warm-up) step per device: .*"
        r"temporaries ([\d.]+) GiB",
        line,
    )
    if m:
      found[m.group(1)] = float(m.group(2))
  return found, lines


def test_routed_step_memory_does_not_depend_on_the_warmup():
  without, _ = _temporaries(0)
  with_warmup, lines = _temporaries(100)
  assert set(without) == {"train"}
  assert set(with_warmup) == {"train", "warm-up"}, lines
  assert with_warmup["train"] <= 1.1 * without["train"], (with_warmup, without)
  assert with_warmup["warm-up"] <= 2.0 * without["train"], (
      with_warmup,
      without,
  )
