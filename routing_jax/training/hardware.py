# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Accelerators the configs target: memory per device and bf16 peak FLOP/s.

A config names its target as `config.hardware`, either in the TPU slice
convention "<kind>_<devices>" ("tpu_v3_32": 32 TPU v3 cores, the paper's
kind of machine) or as "<devices>x<kind>" ("8xh100_80gb"). A "device" is
what jax calls one: a TPU v2/v3 core (two per chip), one chip from v4 on
(megacore), one GPU.

Figures are the vendors' published dense bf16 peaks and memory sizes.
Only these numbers live here; the dry run uses them for its `fits` line and
the training loop for MFU (when jax reports a device kind listed here).
"""

import dataclasses
import re
from typing import Optional

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class DeviceKind:
  name: str
  memory_bytes: int  # per device
  bf16_flops: float  # dense peak per device, FLOP/s
  # Lower-case substrings of jax's `device.device_kind`, most specific
  # first across the table (see `kind_of_device`).
  device_kinds: tuple[str, ...]


DEVICE_KINDS = {
    k.name: k
    for k in (
        # TPU v2/v3: a chip is two devices (cores); the figures are per core.
        DeviceKind("tpu_v2", 8 * GIB, 22.5e12, ("tpu v2",)),
        DeviceKind("tpu_v3", 16 * GIB, 61.5e12, ("tpu v3",)),
        DeviceKind("tpu_v4", 32 * GIB, 275e12, ("tpu v4",)),
        DeviceKind("tpu_v5e", 16 * GIB, 197e12, ("tpu v5 lite", "tpu v5e")),
        DeviceKind("tpu_v5p", 95 * GIB, 459e12, ("tpu v5p", "tpu v5")),
        DeviceKind("tpu_v6e", 32 * GIB, 918e12, ("tpu v6 lite", "tpu v6e")),
        DeviceKind(
            "a100_40gb", 40 * GIB, 312e12, ("a100-sxm4-40gb", "a100-pcie-40gb")
        ),
        DeviceKind("a100_80gb", 80 * GIB, 312e12, ("a100",)),
        DeviceKind("h100_pcie", 80 * GIB, 756e12, ("h100 pcie",)),
        # H100 SXM: 81,559 MiB of HBM3; H200: 143,771 MiB of HBM3e.
        DeviceKind("h100_80gb", 81559 * 2**20, 989e12, ("h100",)),
        DeviceKind("h200", 143771 * 2**20, 989e12, ("h200",)),
    )
}


@dataclasses.dataclass(frozen=True)
class Hardware:
  name: str  # as written in the config
  kind: DeviceKind
  num_devices: int


def parse(spec: str) -> Hardware:
  """ "tpu_v3_32" or "8xh100_80gb" -> Hardware.

  Raises:
    ValueError: naming the spec and the accepted forms and kinds.
  """
  m = re.fullmatch(r"(\d+)x([a-z0-9_]+)", spec) or re.fullmatch(
      r"([a-z0-9_]+?)_(\d+)", spec
  )
  if m:
    count, kind = (
        (m.group(1), m.group(2))
        if spec[0].isdigit()
        else (m.group(2), m.group(1))
    )
    if kind in DEVICE_KINDS and int(count) >= 1:
      return Hardware(spec, DEVICE_KINDS[kind], int(count))
  raise ValueError(
      f"hardware={spec!r}: must be '<kind>_<devices>' (e.g. 'tpu_v3_32') or"
      " '<devices>x<kind>' (e.g. '8xh100_80gb') with kind one of"
      f" {sorted(DEVICE_KINDS)}"
  )


def kind_of_device(device_kind: str) -> Optional[DeviceKind]:
  """The table entry for jax's `device.device_kind`, or None (e.g. CPU)."""
  text = device_kind.lower()
  # Longest pattern first, so "tpu v5 lite" wins over "tpu v5" and
  # "h100 pcie" over "h100".
  pairs = sorted(
      ((p, k) for k in DEVICE_KINDS.values() for p in k.device_kinds),
      key=lambda pk: -len(pk[0]),
  )
  return next((k for p, k in pairs if p in text), None)
