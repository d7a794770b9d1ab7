# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Stand-in for routing_jax.main in checkpoint tests: agreeing on a restore.

Run by launch/local_multiprocess.sh (MODULE=restore_worker). For each fault
in --faults, the processes save steps 1..3 of a small state whose big array
is split between them (mesh fsdp = process count) in <ckpt_dir>/<fault>,
make --fault_process see the fault on step 3, restore, and write what they
got to <out_dir>/<fault>/proc_<i>.json:

  transient  every read of step 3 on that process raises ConnectionResetError
  flaky      only the first read does (the retry succeeds)
  corrupt    that process's shard files of step 3 are truncated: real
             damage that only it reads (the others' shards are intact)
  bitflip    that process reads step 3 with one value of its shard changed
             (silent damage: only the checksums, a collective, can tell)

A restore that fails writes {"error": <message>} instead.
"""

import argparse
import json
import pathlib


def _damage_own_shards(step_dir: pathlib.Path, process: int) -> int:
  """Truncates the array data files process `process` wrote for a step."""
  files = [
      p
      for p in (step_dir / "state" / f"ocdbt.process_{process}").rglob("*")
      if p.is_file() and p.parent.name == "d"
  ]
  for f in files:
    with open(f, "r+b") as fh:
      fh.truncate(f.stat().st_size // 2)
  return len(files)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--distributed", action="store_true")
  parser.add_argument("--coordinator_address")
  parser.add_argument("--num_processes", type=int)
  parser.add_argument("--process_id", type=int)
  parser.add_argument("--out_dir", required=True)
  parser.add_argument("--ckpt_dir", required=True)
  parser.add_argument(
      "--faults",
      required=True,
      help="comma-separated: transient, flaky, corrupt, bitflip",
  )
  parser.add_argument("--fault_process", type=int, default=1)
  args = parser.parse_args()

  # pylint: disable=g-import-not-at-top
  import jax
  from jax.sharding import NamedSharding, PartitionSpec as P
  import numpy as np
  from routing_jax.training import checkpoint_reads
  from routing_jax.training import checkpointing
  from routing_jax import multihost
  from routing_jax.training import sharding
  # pylint: enable=g-import-not-at-top

  jax.distributed.initialize(
      coordinator_address=args.coordinator_address,
      num_processes=args.num_processes,
      process_id=args.process_id,
  )
  me = jax.process_index()
  mesh = sharding.create_mesh(dict(data=1, fsdp=-1, tensor=1))

  def state(step):
    # 256 KiB per process: stored in data files, not inline in the b-tree.
    w = np.arange(256 * 512, dtype=np.float32).reshape(256, 512) + step
    return {
        "w": jax.device_put(w, NamedSharding(mesh, P("fsdp", None))),
        "step": jax.device_put(np.int32(step), NamedSharding(mesh, P())),
    }

  checkpoint_reads.RETRY_DELAYS_S = (0.1, 0.1)
  real_read_step = checkpoint_reads.read_step
  for fault in args.faults.split(","):
    directory = pathlib.Path(args.ckpt_dir) / fault
    with checkpointing.Checkpointer(directory, keep=3, save_every=1) as ckpt:
      for step in (1, 2, 3):
        ckpt.save(step, state(step), {"index": step})
    multihost.barrier(f"saved_{fault}")

    reads = []
    if me == args.fault_process:

      def faulty(
          directory, step, target, partial=False, fault=fault, reads=reads
      ):
        reads.append(step)
        if step == 3 and (
            fault == "transient" or (fault == "flaky" and reads.count(3) == 1)
        ):
          raise ConnectionResetError("injected: connection reset by peer")
        restored, data, meta = real_read_step(directory, step, target, partial)
        if step == 3 and fault == "bitflip":
          w = restored["w"]
          shards = [
              jax.device_put(np.asarray(s.data) + 1, s.device)
              for s in w.addressable_shards
          ]
          restored["w"] = jax.make_array_from_single_device_arrays(
              w.shape, w.sharding, shards
          )
        return restored, data, meta

      checkpoint_reads.read_step = faulty
      if fault == "corrupt":
        assert _damage_own_shards(directory / "3", me) > 0
    multihost.barrier(f"faults_ready_{fault}")

    out = pathlib.Path(args.out_dir) / fault
    out.mkdir(parents=True, exist_ok=True)
    with checkpointing.Checkpointer(directory, keep=3, save_every=1) as ckpt:
      try:
        restored, data, step = ckpt.restore(state(0))
      except checkpointing.CheckpointRestoreError as e:
        restored = str(e)
      steps_after = ckpt.all_steps()
    checkpoint_reads.read_step = real_read_step
    if isinstance(restored, str):
      (out / f"proc_{me}.json").write_text(
          json.dumps({
              "error": restored,
              "steps_after": steps_after,
              "reads_of_step_3": reads.count(3),
          })
      )
      continue
    corrupted = directory / checkpointing.CORRUPTED_SUBDIR
    expected = state(step)["w"]
    result = {
        "step": step,
        "data": data,
        "steps_after": steps_after,
        "corrupted": (
            sorted(p.name.split("-")[0] for p in corrupted.iterdir())
            if corrupted.exists()
            else []
        ),
        "shard_ok": all(
            np.array_equal(np.asarray(a.data), np.asarray(b.data))
            for a, b in zip(
                restored["w"].addressable_shards, expected.addressable_shards
            )
        ),
        "step_leaf": int(np.asarray(restored["step"].addressable_data(0))),
        "reads_of_step_3": reads.count(3),
    }
    (out / f"proc_{me}.json").write_text(json.dumps(result))
  jax.distributed.shutdown()


if __name__ == "__main__":
  main()
