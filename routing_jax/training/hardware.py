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

A program cannot use all of a device's memory: `usable_bytes` states what
the dry run compares against (see its docstring for the reserve), and
`tpu_topology` names the slice that libtpu's compiler builds for a TPU
hardware spec on a machine without TPUs.
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
  # TPUs only: libtpu's name for the generation ("v3"), jax devices per
  # chip (2 cores on v2/v3; one megacore device from v4 on) and the torus
  # rank of a slice (v4 and v5p are 3-D, the others 2-D).
  tpu_generation: str = ""
  devices_per_chip: int = 1
  torus_dims: int = 2

  @property
  def is_tpu(self) -> bool:
    return bool(self.tpu_generation)


DEVICE_KINDS = {
    k.name: k
    for k in (
        # TPU v2/v3: a chip is two devices (cores); the figures are per core.
        DeviceKind("tpu_v2", 8 * GIB, 22.5e12, ("tpu v2",), "v2", 2),
        DeviceKind("tpu_v3", 16 * GIB, 61.5e12, ("tpu v3",), "v3", 2),
        DeviceKind("tpu_v4", 32 * GIB, 275e12, ("tpu v4",), "v4", 1, 3),
        DeviceKind(
            "tpu_v5e", 16 * GIB, 197e12, ("tpu v5 lite", "tpu v5e"), "v5e"
        ),
        DeviceKind(
            "tpu_v5p", 95 * GIB, 459e12, ("tpu v5p", "tpu v5"), "v5p", 1, 3
        ),
        DeviceKind(
            "tpu_v6e", 32 * GIB, 918e12, ("tpu v6 lite", "tpu v6e"), "v6e"
        ),
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


# TPU: the HBM a program may use, as the TPU compiler states it when it
# refuses one too large ("exceeds available HBM (15.48G)"; libtpu 0.0.42,
# measured by compiling for each kind). The rest of the HBM is the runtime's.
TPU_AVAILABLE_BYTES = {
    "tpu_v2": int(7.48 * GIB),
    "tpu_v3": int(15.48 * GIB),
    "tpu_v4": int(30.75 * GIB),
    "tpu_v5e": int(15.75 * GIB),
    "tpu_v6e": int(31.25 * GIB),
}
# Kinds not measured keep this fraction back (the measured ones: 2-6.5%).
TPU_RESERVE_FRACTION = 0.05
# GPU: JAX preallocates this fraction of the memory at start-up and XLA
# allocates from it (XLA_PYTHON_CLIENT_MEM_FRACTION changes it).
GPU_PREALLOCATE_FRACTION = 0.75


def usable_bytes(kind: DeviceKind, environ=None) -> tuple[int, str]:
  """(bytes a step may use per device, how that follows from the nominal)."""
  import os  # pylint: disable=g-import-not-at-top

  nominal = kind.memory_bytes
  if kind.is_tpu:
    if kind.name in TPU_AVAILABLE_BYTES:
      usable = TPU_AVAILABLE_BYTES[kind.name]
      why = "the TPU compiler's available HBM"
    else:
      usable = int(nominal * (1 - TPU_RESERVE_FRACTION))
      why = f"a {TPU_RESERVE_FRACTION:.0%} reserve, not measured"
    return usable, (
        f"{nominal / GIB:.1f} GiB HBM less {(nominal - usable) / GIB:.2f}"
        f" GiB for the runtime: {why}"
    )
  env = os.environ if environ is None else environ
  fraction = float(
      env.get("XLA_PYTHON_CLIENT_MEM_FRACTION", GPU_PREALLOCATE_FRACTION)
  )
  return int(nominal * fraction), (
      f"{fraction:.0%} of {nominal / GIB:.1f} GiB, what JAX preallocates"
      " (XLA_PYTHON_CLIENT_MEM_FRACTION)"
  )


def tpu_topology(hw: Hardware) -> str:
  """libtpu's topology name for a TPU slice: tpu_v3_32 -> "v3:4x4".

  Slices are powers of two chips, as square as the torus allows (v4/v5p:
  tpu_v5p_256 -> "v5p:4x8x8"; v5e/v6e: tpu_v6e_256 -> "v6e:16x16").

  Raises:
    ValueError: not a TPU, or no slice has that many devices.
  """
  kind, n = hw.kind, hw.num_devices
  chips, rest = divmod(n, kind.devices_per_chip)
  if not kind.is_tpu or rest or chips & (chips - 1):
    raise ValueError(
        f"hardware={hw.name!r}: not a TPU slice (a power of two chips of"
        f" {kind.devices_per_chip} device(s) each)"
    )
  e = chips.bit_length() - 1
  dims = kind.torus_dims
  sides = sorted(1 << (e // dims + (i < e % dims)) for i in range(dims))
  if dims == 3:  # v4's convention: 2x2x1, not 1x2x2
    sides = [s for s in sides if s > 1] + [s for s in sides if s == 1]
  return f"{kind.tpu_generation}:{'x'.join(map(str, sides))}"


def tpu_accelerator_type(hw: Hardware) -> str:
  """Cloud TPU's accelerator type of the slice: "v3-32", "v5p-512" (v2 to
  v5p count TensorCores, two per chip), "v5litepod-32", "v6e-256"."""
  chips = hw.num_devices // hw.kind.devices_per_chip
  two_cores = hw.kind.devices_per_chip == 2 or hw.kind.torus_dims == 3
  name = {"v5e": "v5litepod"}.get(
      hw.kind.tpu_generation, hw.kind.tpu_generation
  )
  return f"{name}-{chips * 2 if two_cores else chips}"
