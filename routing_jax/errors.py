# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Errors in what the user gave us (data, workdir), as opposed to bugs.

Every command-line tool reports a `UserInputError` as one line on stderr and
a non-zero exit (`routing_jax.cli`); anything else keeps its traceback.
"""


class UserInputError(Exception):
  """Bad input from the user; the message names the offending thing."""


class DataError(UserInputError):
  """The configured dataset cannot be opened (missing, empty, unprepared)."""


class WorkdirError(UserInputError):
  """The workdir cannot be created or written."""


class ConfigError(UserInputError, ValueError):
  """The config does not fit what it meets: the devices, or the run it reads.

  A ValueError too, as the checks that raise it raised before.
  """
