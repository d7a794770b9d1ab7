# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""A config section (ml-collections ConfigDict or mapping) -> its frozen
dataclass: `ModelConfig`, `RoutingConfig`, `KMeansConfig`, `TrainConfig`.
jax-free; imports nothing of routing_jax."""

import dataclasses
from typing import Any


def build(cls, config: Any, own: str, prefix: str):
  """`cls(**config)`; unknown keys are an error naming the section.

  Args:
    cls: the dataclass; it validates itself on construction, its errors
      naming fields as `<own>field=...`.
    config: a ConfigDict or mapping of the section's fields.
    own: the prefix `cls`'s own errors use (e.g. "routing.").
    prefix: the section's path in the caller's config (e.g.
      "model.routing."), which replaces `own` in the errors.
  """
  items = dict(config.to_dict() if hasattr(config, "to_dict") else config)
  known = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(items) - known)
  if unknown:
    raise ValueError(f"{prefix.rstrip('.')}: unknown field(s) {unknown}")
  try:
    return cls(**items)
  except ValueError as e:
    text = str(e)
    if own != prefix and text.startswith(own):
      raise ValueError(prefix + text[len(own) :]) from None
    raise
