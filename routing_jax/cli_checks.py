# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Checks the command-line tools run before any restore or compile.

Each turns a mistake into an `errors.UserInputError` (one line through
`cli.run`): a config that fails validation, a mesh that does not fit the
devices, a model config that is not the run's, an --output that cannot be
written. Unlike `cli`, these import the training code, so they belong with
the programs.
"""

import os
from typing import Any, Optional

from routing_jax import errors


def check_mesh(config: Any, num_devices: Optional[int] = None) -> None:
  """Refuses a mesh that does not fit the devices, naming the field.

  Raises:
    errors.ConfigError: the mesh sizes do not divide the device count.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from routing_jax.training import sharding  # pylint: disable=g-import-not-at-top

  n = jax.device_count() if num_devices is None else num_devices
  try:
    tensor = sharding.mesh_shape(config.mesh, n)[2]
  except ValueError as e:
    raise errors.ConfigError(
        f"{e} Set --config.mesh.data/fsdp/tensor to sizes whose product is"
        f" the {n} device(s) here (one of them may be -1)."
    ) from e
  from routing_jax.nn.model_config import ModelConfig  # pylint: disable=g-import-not-at-top
  from routing_jax.training import train  # pylint: disable=g-import-not-at-top

  try:
    train.check_tensor_divides_heads(
        ModelConfig.from_config(config.model), tensor
    )
  except ValueError as e:
    raise errors.ConfigError(str(e)) from e


def mesh_for_here(config: Any, saved: bool) -> None:
  """`check_mesh`; a mesh read from the run's own config.json that does not
  fit the devices here becomes data-parallel over all of them (a checkpoint
  restores onto any mesh), with a warning."""
  try:
    check_mesh(config)
  except errors.ConfigError:
    if not saved:
      raise
    from absl import logging  # pylint: disable=g-import-not-at-top

    logging.warning(
        "The run's mesh (%s) does not fit the devices here; using"
        " data-parallel over all of them.",
        ", ".join(f"{k}={v}" for k, v in config.mesh.items()),
    )
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = -1, 1, 1


def run_config(config: Any, workdir: str) -> tuple[Any, Any]:
  """(config, ModelConfig) for the read-only tools, checked.

  `config` from --config (its model section must be the run's), or None:
  the run's own, from config.json in the workdir.
  """
  from routing_jax.training import workdir as workdir_lib  # pylint: disable=g-import-not-at-top

  if config is None:
    workdir_lib.check_reachable(workdir)
    config = workdir_lib.load_config(workdir)
    return config, validate_config(config)
  model_cfg = validate_config(config)
  check_model_config(config, workdir)
  return config, model_cfg


def check_model_config(config: Any, workdir: str) -> None:
  """For read-only tools: the config's model section must be the run's."""
  from routing_jax.training import resume  # pylint: disable=g-import-not-at-top
  from routing_jax.training import workdir as workdir_lib  # pylint: disable=g-import-not-at-top

  workdir_lib.check_reachable(workdir)
  workdir_lib.check_model_config(
      workdir,
      config,
      ignore=resume.HASH_EXEMPT,
  )


def validate_config(config: Any) -> Any:
  """`train.validate_config`, its ValueError as a ConfigError (one line)."""
  from routing_jax.training import train  # pylint: disable=g-import-not-at-top

  try:
    return train.validate_config(config)
  except ValueError as e:
    raise errors.ConfigError(str(e)) from e


def prepare_output_file(path: str, is_image: bool) -> None:
  """Checks sample's --output and creates its folder, before any restore.

  Sampling can take long: a name that cannot be written must fail first,
  not after the text is generated.
  """
  if is_image and not path.endswith(".png"):
    raise errors.UserInputError(
        "--output must name a .png file for image models"
    )
  if not path:
    return
  from routing_jax.training import workdir as workdir_lib  # pylint: disable=g-import-not-at-top

  if workdir_lib.is_url(path):  # object storage: through etils.epath
    target = workdir_lib.resolve(path)
    try:
      target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
      raise errors.UserInputError(
          f"--output={path}: cannot create its folder: {e}"
      ) from e
    if target.is_dir():
      raise errors.UserInputError(f"--output={path}: names a folder")
    return
  folder = os.path.dirname(os.path.abspath(os.path.expanduser(path)))
  try:
    os.makedirs(folder, exist_ok=True)
  except OSError as e:
    raise errors.UserInputError(
        f"--output={path}: cannot create its folder: {e}"
    ) from e
  if os.path.isdir(path) or not os.access(folder, os.W_OK):
    raise errors.UserInputError(f"--output={path}: cannot write a file there")


def write_output_text(path: str, text: str) -> None:
  """Writes sample's text to --output: a local file or an object (gs://)."""
  from routing_jax.training import workdir as workdir_lib  # pylint: disable=g-import-not-at-top

  if workdir_lib.is_url(path):
    workdir_lib.resolve(path).write_text(text)
    return
  with open(os.path.expanduser(path), "w", encoding="utf-8") as f:
    f.write(text)
