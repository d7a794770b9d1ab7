# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""TrainConfig: the `train` section of an experiment config, frozen and
validated once.

`experiments/common.base_config()` builds the section from these fields, so
their defaults live here only; the training loop reads the section through
`TrainConfig.from_config`, whose errors name the field and the rule. jax-free
(experiment configs import it). Checks that need other sections (the batch
against grad_accum_steps, the learning-rate scaling against the mesh) stay
in `train.validate_config`.
"""

import dataclasses
from typing import Any

from routing_jax import config_sections

OPTIMIZERS = ("adafactor", "adamw")
SCHEDULES = ("rsqrt", "cosine", "constant")
LR_BATCH_SCALINGS = ("none", "sqrt", "linear")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Optimizer, schedule, loop cadence, checkpoints and samples."""

  steps: int = 1000
  optimizer: str = "adafactor"  # "adafactor" (the paper's) or "adamw"
  lr: float = 0.01
  # How lr follows the global batch when data.per_device_batch_size sets
  # it (training/batch_scaling.py): "none", "sqrt" or "linear".
  lr_batch_scaling: str = "none"
  schedule: str = "rsqrt"  # "rsqrt" (the paper's), "cosine", "constant"
  warmup_steps: int = 10000
  b1: float = 0.9  # adamw
  b2: float = 0.98  # adamw
  weight_decay: float = 0.0
  grad_clip: float = 0.0  # global norm; 0 disables
  grad_accum_steps: int = 1
  # Sequence positions per chunk of the output projection + loss: the
  # [batch, length, vocab] logits never exist whole (0: one chunk).
  loss_chunk_len: int = 512
  kmeans_loss_weight: float = 1.0
  seed: int = 0
  log_every: int = 50
  eval_every: int = 500
  eval_batches: int = 16
  checkpoint_every: int = 500
  # Also save when this much wall time has passed since the last save
  # (checked at log points; 0: off), so a lost host costs minutes, not
  # checkpoint_every steps.
  checkpoint_every_minutes: float = 0.0
  keep_checkpoints: int = 3
  async_checkpointing: bool = True
  sample_length: int = 256  # characters sampled at the end of training
  sample_prompt: str = ""
  # Tokens sampled (from sample_prompt) into TensorBoard at each evaluation
  # (0: none; text models only).
  eval_sample_length: int = 128

  def __post_init__(self):
    self.validate()

  @classmethod
  def from_config(cls, config: Any) -> "TrainConfig":
    """From a ConfigDict / mapping; unknown keys are an error, missing ones
    (a config.json saved before the field existed) take the default."""
    return config_sections.build(cls, config, "train.", "train.")

  def replace(self, **kw) -> "TrainConfig":
    return dataclasses.replace(self, **kw)

  def validate(self) -> None:
    def need(cond, field, rule):
      if not cond:
        raise ValueError(f"train.{field}={getattr(self, field)!r}: {rule}")

    need(self.steps >= 1, "steps", "must be >= 1")
    need(self.lr > 0, "lr", "must be > 0")
    need(
        self.optimizer in OPTIMIZERS,
        "optimizer",
        f"must be one of {OPTIMIZERS}",
    )
    need(self.schedule in SCHEDULES, "schedule", f"must be one of {SCHEDULES}")
    need(
        self.lr_batch_scaling in LR_BATCH_SCALINGS,
        "lr_batch_scaling",
        f"must be one of {LR_BATCH_SCALINGS}",
    )
    need(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
    need(self.grad_clip >= 0, "grad_clip", "must be >= 0")
    need(self.weight_decay >= 0, "weight_decay", "must be >= 0")
    need(
        self.loss_chunk_len >= 0,
        "loss_chunk_len",
        "must be >= 0 (0: the whole sequence in one chunk)",
    )
    need(self.grad_accum_steps >= 1, "grad_accum_steps", "must be >= 1")
    for f in (
        "log_every",
        "eval_every",
        "checkpoint_every",
        "keep_checkpoints",
        "eval_batches",
    ):
      need(getattr(self, f) >= 1, f, "must be >= 1")
    need(
        self.checkpoint_every_minutes >= 0,
        "checkpoint_every_minutes",
        "must be >= 0 (0: no wall-clock saves)",
    )
    need(self.sample_length >= 0, "sample_length", "must be >= 0")
    need(self.eval_sample_length >= 0, "eval_sample_length", "must be >= 0")
