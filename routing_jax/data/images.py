# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Images as sub-pixel sequences, and PNG grids of images.

The paper's image models read an image [H, W, C] as the sequence of its H*W*C
sub-pixel intensities in raster order with the channel fastest (R, G, B of
the top-left pixel, then the next pixel to the right, ...): exactly
`img.reshape(-1)`. Values stay 0..255 (the image vocabulary is 256).

PNG writing uses only zlib (no Pillow/matplotlib needed).
"""

import os
import struct
import zlib

from etils import epath
import numpy as np


def _check_uint8_values(x: np.ndarray, name: str) -> None:
  if x.size and (x.min() < 0 or x.max() > 255):
    raise ValueError(
        f"{name} values must lie in 0..255, got {x.min()}..{x.max()}"
    )


def image_to_sequence(img: np.ndarray) -> np.ndarray:
  """Flattens an image into sub-pixels, raster order, channel fastest.

  Args:
    img: [H, W, C] (or [H, W], read as C=1) integers in 0..255.

  Returns:
    int32 [H*W*C], element (y*W + x)*C + c = img[y, x, c].
  """
  img = np.asarray(img)
  if img.ndim == 2:
    img = img[:, :, None]
  if img.ndim != 3:
    raise ValueError(f"img must be [H, W, C] or [H, W], got {img.shape}")
  _check_uint8_values(img, "img")
  return img.reshape(-1).astype(np.int32)


def sequence_to_image(seq: np.ndarray, shape) -> np.ndarray:
  """Inverse of `image_to_sequence`.

  Args:
    seq: [H*W*C] (or [batch, H*W*C]) integers in 0..255.
    shape: (H, W, C).

  Returns:
    uint8 [H, W, C] (or [batch, H, W, C]).
  """
  seq = np.asarray(seq)
  h, w, c = (int(s) for s in shape)
  if seq.shape[-1] != h * w * c:
    raise ValueError(
        f"seq length {seq.shape[-1]} does not match shape {shape}"
        f" (H*W*C = {h * w * c})"
    )
  _check_uint8_values(seq, "seq")
  return seq.reshape(seq.shape[:-1] + (h, w, c)).astype(np.uint8)


def make_grid(
    images: np.ndarray,
    *,
    ncols: int | None = None,
    padding: int = 2,
    pad_value: int = 255,
) -> np.ndarray:
  """Tiles images into one image.

  Args:
    images: [N, H, W, C] or [N, H, W] integers in 0..255, C in {1, 3}.
    ncols: images per row (default: ceil(sqrt(N))).
    padding: pixels between and around images.
    pad_value: intensity of the padding.

  Returns:
    uint8 [rows*(H+p)+p, ncols*(W+p)+p, C].
  """
  images = np.asarray(images)
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.shape[0] == 0:
    raise ValueError(
        f"images must be a non-empty [N, H, W, C] stack, got {images.shape}"
    )
  if images.shape[-1] not in (1, 3):
    raise ValueError(f"images must have 1 or 3 channels, got {images.shape}")
  _check_uint8_values(images, "images")
  n, h, w, c = images.shape
  ncols = ncols or int(np.ceil(np.sqrt(n)))
  nrows = -(-n // ncols)
  p = padding
  grid = np.full(
      (nrows * (h + p) + p, ncols * (w + p) + p, c), pad_value, np.uint8
  )
  for i in range(n):
    r, col = divmod(i, ncols)
    y, x = p + r * (h + p), p + col * (w + p)
    grid[y : y + h, x : x + w] = images[i]
  return grid


def encode_png(img: np.ndarray) -> bytes:
  """Encodes uint8 [H, W, 1] or [H, W, 3] (or [H, W]) as PNG bytes."""
  img = np.asarray(img)
  if img.ndim == 2:
    img = img[:, :, None]
  if img.ndim != 3 or img.shape[-1] not in (1, 3):
    raise ValueError(f"img must be [H, W, 1|3], got {img.shape}")
  _check_uint8_values(img, "img")
  img = img.astype(np.uint8)
  h, w, c = img.shape
  color_type = 0 if c == 1 else 2  # greyscale or RGB, 8 bits per sample.
  # Each scanline starts with filter type 0 (none).
  raw = np.concatenate(
      [np.zeros((h, 1), np.uint8), img.reshape(h, w * c)], axis=1
  ).tobytes()

  def chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

  header = struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)
  return (
      b"\x89PNG\r\n\x1a\n"
      + chunk(b"IHDR", header)
      + chunk(b"IDAT", zlib.compress(raw, 9))
      + chunk(b"IEND", b"")
  )


def save_png_grid(
    images: np.ndarray,
    path: str | os.PathLike,
    *,
    ncols: int | None = None,
    padding: int = 2,
) -> np.ndarray:
  """Writes images as one PNG grid.

  Args:
    images: [N, H, W, C] or [N, H, W] integers in 0..255, C in {1, 3}.
    path: the .png file to write (parent directories are created).
    ncols: images per row (default: ceil(sqrt(N))).
    padding: white pixels between and around images.

  Returns:
    The grid written, uint8 [height, width, C].
  """
  grid = make_grid(images, ncols=ncols, padding=padding)
  # Through etils.epath, so that a gs:// path reaches the bucket.
  target = epath.Path(os.fspath(path))
  target.parent.mkdir(parents=True, exist_ok=True)
  target.write_bytes(encode_png(grid))
  return grid
