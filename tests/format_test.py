# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""House style: every file carries the license header and is formatted.

The formatter is pyink (Google style: 2-space indents, 80 columns), set up
in pyproject.toml; `pyink .` fixes what this test reports.
"""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
HEADER = (
    "# Copyright 2026 The routing-jax Authors.\n"
    "# SPDX-License-Identifier: Apache-2.0\n"
)


def _tracked(*patterns):
  out = subprocess.run(
      ["git", "ls-files", *patterns],
      cwd=ROOT,
      capture_output=True,
      text=True,
      check=True,
  ).stdout
  return [ROOT / p for p in out.split()]


def test_every_source_file_starts_with_the_license_header():
  missing = []
  for path in _tracked("*.py", "*.sh", ".ci/run"):
    text = path.read_text(encoding="utf-8")
    if text.startswith("#!"):
      text = text.split("\n", 1)[1]
    if not text.startswith(HEADER):
      missing.append(str(path.relative_to(ROOT)))
  assert not missing, f"no license header: {missing}"


def test_the_code_is_formatted_with_pyink():
  proc = subprocess.run(
      [sys.executable, "-m", "pyink", "--check", "--quiet", "."],
      cwd=ROOT,
      capture_output=True,
      text=True,
      check=False,
  )
  assert proc.returncode == 0, (
      "pyink would reformat (run `pyink .`):\n" + proc.stderr[-3000:]
  )
