# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""benchmarks/step_profile.py's comparison of two profiles (no jax run)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import step_profile  # pylint: disable=g-import-not-at-top,wrong-import-position


def test_single_threaded_counts_thunks_the_second_core_did_not_speed_up():
  two_cores = {
      "thunks_by_shape": {
          "dot f32[8,2,16,64,192]": 60.0,  # batched: as slow as on one core
          "multiply_fusion f32[8192,1024]": 30.0,  # split over both cores
          "copy_fusion f32[8192,128]": 10.0,  # 1.25x: below the threshold
          "sort ?": 5.0,  # absent from the other run: not matched
      }
  }
  one_core = {
      "thunks_by_shape": {
          "dot f32[8,2,16,64,192]": 62.0,
          "multiply_fusion f32[8192,1024]": 58.0,
          "copy_fusion f32[8192,128]": 12.5,
      }
  }
  slow, matched, rows = step_profile.single_threaded(two_cores, one_core)
  assert slow == 70.0
  assert matched == 100.0
  assert [r[2] for r in rows] == [
      "dot f32[8,2,16,64,192]",
      "multiply_fusion f32[8192,1024]",
      "copy_fusion f32[8192,128]",
  ]
  # A stricter threshold counts the 1.25x thunk as parallel.
  assert step_profile.single_threaded(two_cores, one_core, 1.2)[0] == 60.0
