# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Stand-in for routing_jax.main in launcher tests: one cross-process psum.

Takes the distributed flags the launchers pass to routing_jax.main, joins
the job with jax.distributed, sums a per-device value over every device of
every process and writes what it saw to <out_dir>/proc_<process_id>.json.
Process i contributes i + 1 on each of its local devices. Arguments it does
not know (--config, --workdir, overrides) are recorded, not rejected, so
tests can check what a launcher passed through.
"""

import argparse
import json
import os
import sys

import numpy as np


def main(argv=None):
  parser = argparse.ArgumentParser()
  parser.add_argument("--distributed", action="store_true")
  parser.add_argument("--coordinator_address")
  parser.add_argument("--num_processes", type=int)
  parser.add_argument("--process_id", type=int)
  parser.add_argument("--out_dir", required=True)
  parser.add_argument(
      "--fail_process",
      type=int,
      default=-1,
      help="this process exits with status 3 at once",
  )
  parser.add_argument(
      "--config_differs_on",
      type=int,
      default=-2,
      help=(
          "run multihost.check_same_program with a config that differs "
          "on this process (-1: the same everywhere) and record the outcome"
      ),
  )
  args, passed_through = parser.parse_known_args(argv)
  if args.process_id == args.fail_process:
    sys.exit(3)

  # Imported late so that --fail_process exits without starting JAX.
  # pylint: disable=g-import-not-at-top
  import jax
  from jax.sharding import NamedSharding, PartitionSpec as P
  # pylint: enable=g-import-not-at-top

  if args.distributed:
    jax.distributed.initialize(
        coordinator_address=args.coordinator_address,
        num_processes=args.num_processes,
        process_id=args.process_id,
    )
  mesh = jax.make_mesh(
      (jax.device_count(),),
      ("devices",),
      axis_types=(jax.sharding.AxisType.Auto,),
  )
  local = np.full(
      (jax.local_device_count(),), jax.process_index() + 1, np.float32
  )
  x = jax.make_array_from_process_local_data(
      NamedSharding(mesh, P("devices")), local
  )
  total = jax.jit(
      jax.shard_map(
          lambda a: jax.lax.psum(a, "devices"),
          mesh=mesh,
          in_specs=P("devices"),
          out_specs=P(),
      )
  )(x)
  result = {
      "process_index": jax.process_index(),
      "process_count": jax.process_count(),
      "device_count": jax.device_count(),
      "local_device_count": jax.local_device_count(),
      "platform": jax.devices()[0].platform,
      "sum": float(np.asarray(total.addressable_data(0))[0]),
      "passed_through": passed_through,
  }
  if args.config_differs_on >= -1:
    from routing_jax import multihost  # pylint: disable=g-import-not-at-top

    config = '{"steps": 3}'
    if jax.process_index() == args.config_differs_on:
      config = '{"steps": 4}'
    try:
      multihost.check_same_program(config)
      result["program_check"] = "same"
    except RuntimeError as e:
      result["program_check"] = str(e)
  os.makedirs(args.out_dir, exist_ok=True)
  path = os.path.join(args.out_dir, f"proc_{jax.process_index()}.json")
  with open(path, "w") as f:
    json.dump(result, f)
  if args.distributed:
    jax.distributed.shutdown()


if __name__ == "__main__":
  main()
