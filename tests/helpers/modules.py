# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Builds RoutingAttention modules for tests from one flat set of keywords."""

import dataclasses

import routing_jax as rj

CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(rj.RoutingConfig))


def routing_attention(**kw) -> rj.RoutingAttention:
  """RoutingConfig fields in `kw` go to the module's `config`, the rest to
  the module itself."""
  config = {k: v for k, v in kw.items() if k in CONFIG_FIELDS}
  module = {k: v for k, v in kw.items() if k not in CONFIG_FIELDS}
  return rj.RoutingAttention(
      config=rj.RoutingConfig.from_config(config), **module
  )
