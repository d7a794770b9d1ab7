# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""How the command-line tools end: a mistake the user can fix is one line.

Every tool (`python -m routing_jax.main | evaluate | sample | dryrun`,
`python -m routing_jax.data.datasets.build`) starts through `run(main)`:
absl's `app.run`, with a flag parser that reports a bad config file or
override in one line, and a wrapper that turns the errors a user can fix
into one line on stderr and exit status 1:

  errors.UserInputError (bad data, workdir, config, flags), a checkpoint
  that cannot be restored, a non-finite loss, and a full disk.

Anything else is a bug and keeps its traceback.
"""

import errno
import functools
import re
import sys
import traceback
from typing import Any, Callable, Optional

from absl import app
from absl import flags
from absl import logging
from absl.logging import converter

from routing_jax import errors

# errno values that mean the storage is full, not that the program is wrong.
_FULL = (errno.ENOSPC, errno.EDQUOT)
# Tensorstore (Orbax's array writer) reports a full disk as a ValueError
# whose text carries the OS message.
_FULL_TEXT = ("No space left on device", "Disk quota exceeded")


def _first_key_error(error: BaseException) -> Optional[str]:
  """The field name of the KeyError that starts `error`'s chain, if any."""
  first = error
  while first.__context__ is not None:
    first = first.__context__
  if (
      isinstance(first, KeyError)
      and first.args
      and isinstance(first.args[0], str)
  ):
    return first.args[0]
  return None


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with config-file mistakes as one line.

  ml_collections reports an override of a field that the locked config
  lacks as a KeyError/AttributeError traceback, and a config file that
  rejects its argument (`:tinyy`) as a flag error holding a whole
  traceback; both become one line naming the flag.
  """
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    inner = _config_file_error(str(e))
    if inner is not None:
      sys.exit(f"Invalid --config: {inner}")
    # Other flag errors are one line already; worded as absl words them.
    sys.stderr.write(f"FATAL Flags parsing error: {e}\n")
    sys.stderr.write("Pass --helpshort or --helpfull to see help on flags.\n")
    sys.exit(1)
  except (AttributeError, KeyError) as e:
    key = _first_key_error(e)
    if key is None:
      raise
    flag = next(
        (
            a.split("=")[0]
            for a in argv[1:]
            if a.startswith("--config.")
            and key in a.split("=")[0].split(".")[1:]
        ),
        "--config",
    )
    hint = re.search(r'Did you mean "(\w+)"', str(e))
    sys.exit(
        f"Invalid config override {flag}: the config has no field {key!r}"
        + (f" (did you mean {hint.group(1)!r}?)" if hint else "")
        + "."
    )


def _config_file_error(text: str) -> Optional[str]:
  """The exception line inside ml_collections' "Error whilst parsing" text."""
  if "Error whilst parsing config file" not in text:
    return None
  lines = [l.strip() for l in text.splitlines() if l.strip()]
  return lines[-1] if lines else None


def _load_config_flag() -> None:
  """Loads --config now, so that a missing file is one line (not later)."""
  if "config" not in flags.FLAGS or flags.FLAGS["config"].value is None:
    return
  try:
    getattr(flags.FLAGS["config"].value, "keys")  # Forces the lazy load.
  except (OSError, ImportError, SyntaxError, ValueError) as e:
    raise errors.UserInputError(
        f"cannot load --config={flags.FLAGS['config'].serialize()[9:]}:"
        f" {str(e).splitlines()[0]}"
    ) from e


def _disk_full(error: BaseException) -> bool:
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in _FULL:
      return True
    if any(t in str(error) for t in _FULL_TEXT):
      return True
    error = error.__cause__ or error.__context__
  return False


def _class(module: str, name: str) -> Optional[type]:
  """A class of an already imported module (this module imports no jax)."""
  return getattr(sys.modules.get(module), name, None)


def describe(error: BaseException) -> Optional[str]:
  """The one line to print for an error the user can act on, else None."""
  restore_error = _class(
      "routing_jax.training.checkpointing", "CheckpointRestoreError"
  )
  nonfinite = _class("routing_jax.training.train_loop", "NonFiniteLossError")
  if isinstance(error, errors.DataError):
    return f"Invalid data: {error}"
  if isinstance(error, errors.WorkdirError):
    return f"Invalid workdir: {error}"
  if isinstance(error, errors.ConfigError):
    return f"Invalid config: {error}"
  if isinstance(error, errors.UserInputError):
    return f"Error: {error}"
  if restore_error is not None and isinstance(error, restore_error):
    return f"Cannot restore: {error}"
  if nonfinite is not None and isinstance(error, nonfinite):
    return f"Training stopped: {error}"
  if _disk_full(error):
    where = getattr(error, "filename", None)
    return (
        "Disk full"
        + (f" writing {where}" if where else "")
        + f" ({' '.join(str(error).split())[:300]}). Free space (or choose"
        " another --workdir) and rerun the same command: training resumes"
        " from the newest committed checkpoint; committed checkpoints are"
        " intact."
    )
  return None


class _QuietOrbax:
  """Drops Orbax's per-save and per-restore INFO chatter; its warnings
  still show. A filter of the absl logger (records carry the standard
  levels)."""

  def filter(self, record):
    if "/orbax/" not in record.pathname:
      return True
    # evaluate and sample open checkpoints read-only on purpose.
    if record.getMessage().startswith("Given directory is read only"):
      return False
    return record.levelno >= converter.STANDARD_WARNING


def _quiet_defaults() -> None:
  """What the tools print by default: their own lines and warnings (INFO
  logs with --verbosity=0)."""
  logging.get_absl_logger().addFilter(_QuietOrbax())
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


def _end_multi_process_job(line: Optional[str], error: Exception) -> None:
  """In a multi-process job: prints this process's error, tells the other
  processes (they end too, naming it) and ends now; else returns."""
  if "jax" not in sys.modules:  # no job was joined
    return
  from routing_jax import multihost  # pylint: disable=g-import-not-at-top

  if not multihost.is_multi_process():
    return
  if line is None:
    traceback.print_exc()
  else:
    print(line, file=sys.stderr)
  multihost.end_job(line or f"{type(error).__name__}: {error}")


def _one_line_errors(main: Callable[[list[str]], Any]):
  @functools.wraps(main)
  def wrapped(argv):
    try:
      _quiet_defaults()
      _load_config_flag()
      return main(argv)
    except Exception as e:  # pylint: disable=broad-exception-caught
      line = describe(e)
      _end_multi_process_job(line, e)
      if line is None:
        raise
      sys.stdout.flush()
    # Outside the except block: nothing chains onto the exit.
    sys.exit(line)

  return wrapped


def run(main: Callable[[list[str]], Any]) -> None:
  """`app.run(main)` with the user's mistakes as one line (module doc)."""
  app.run(_one_line_errors(main), flags_parser=parse_flags)
