# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Experiment configs (ml-collections), one file per paper setting."""
