"""Decode-once caches for file-backed splits.

Decoding a 128-px JPEG costs about as much as a ConvNet forward on it, so re-decoding every file
every epoch (or every recovery step that draws real images) makes the data path, not the model, the
bottleneck. A ``DecodedCache`` keeps each image as uint8 [C, S, S] after its first decode:

* ``memory``: a tensor in this process (the default; ImageNette-128's 9,469 train images are 465 MB).
  DataLoader workers each hold their own copy, so with ``num_workers > 0`` prefer ``disk``.
* ``disk``: a ``numpy.memmap`` under ``$TINYSET_CACHE/decoded/<key>/`` shared by every process and
  every later run. A second byte-map records which images are filled; pixels are written before
  their flag, so a killed run leaves only images that are complete and flagged, and a reader never
  trusts an unflagged slot. The key hashes the root, the size and every file's path, size and
  mtime, so an edited folder gets a fresh cache instead of stale pixels.
* ``off``: decode on every access (the old behaviour).

The cached value is exactly what ``read_image`` returns times 255 (it is already a uint8 image
before the float conversion), so cached and uncached batches are bit-identical."""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..errors import TinysetError
from ..utils.cache import cache_root
from ..utils.files import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

MODES = ("memory", "disk", "off")


def folder_key(files: Sequence[Path], size: int) -> str:
    """A short stable key for a list of files at one decode size (changes when any file changes)."""
    h = hashlib.sha256(str(size).encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.absolute()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


class DecodedCache:
    """uint8 [N, C, S, S] images filled on first access; see the module docstring for the modes."""

    def __init__(self, n: int, shape: tuple[int, int, int], mode: str = "memory", directory: Path | None = None):
        if mode not in MODES:
            raise TinysetError(f"unknown decode cache mode {mode!r}; choose one of {', '.join(MODES)}")
        if mode == "disk" and directory is None:
            raise TinysetError("decode cache mode 'disk' needs a directory")
        self.n, self.shape, self.mode, self.directory = n, tuple(shape), mode, directory
        self._pixels: np.ndarray | torch.Tensor | None = None
        self._filled: np.ndarray | torch.Tensor | None = None

    # memmaps are opened lazily in each process: a pickled cache (DataLoader worker) reopens the files
    def __getstate__(self):
        state = self.__dict__.copy()
        if self.mode == "disk":
            state["_pixels"] = state["_filled"] = None
        return state

    def _open(self) -> None:
        if self._pixels is not None:
            return
        if self.mode == "memory":
            self._pixels = torch.zeros(self.n, *self.shape, dtype=torch.uint8)
            self._filled = torch.zeros(self.n, dtype=torch.bool)
            return
        d = Path(self.directory)
        d.mkdir(parents=True, exist_ok=True)
        meta = d / "meta.json"
        want = {"n": self.n, "shape": list(self.shape), "dtype": "uint8", "version": 1}
        if meta.exists() and json.loads(meta.read_text()) != want:
            raise TinysetError(f"decode cache {d} was written for {meta.read_text().strip()}, not {want}; delete it")
        # np.memmap mode "w+" truncates; create the files once (sparse), then always open "r+"
        for name, shape in (("pixels.u8", (self.n, *self.shape)), ("filled.u8", (self.n,))):
            p = d / name
            if not p.exists():  # unique temp names: DataLoader workers may race to create it
                with atomic_path(p) as tmp:
                    np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape).flush()
        if not meta.exists():
            atomic_write_text(meta, json.dumps(want))
        self._pixels = np.memmap(d / "pixels.u8", dtype=np.uint8, mode="r+", shape=(self.n, *self.shape))
        self._filled = np.memmap(d / "filled.u8", dtype=np.uint8, mode="r+", shape=(self.n,))

    def filled(self) -> int:
        """How many images are decoded and cached."""
        self._open()
        return int(self._filled.sum())

    def get(self, indices: torch.Tensor, decode: Callable[[int], torch.Tensor]) -> torch.Tensor:
        """uint8 [len(indices), C, S, S]; ``decode(i)`` (uint8 [C, S, S]) is called for unfilled slots only."""
        self._open()
        idx = indices.tolist()
        for i in idx:
            if not self._filled[i]:
                img = decode(i)
                if self.mode == "memory":
                    self._pixels[i] = img
                    self._filled[i] = True
                else:
                    self._pixels[i] = img.numpy()
                    self._filled[i] = 1  # after the pixels: a flagged slot is always complete
        if self.mode == "memory":
            return self._pixels[indices]
        return torch.from_numpy(np.ascontiguousarray(self._pixels[np.asarray(idx, dtype=np.int64)]))


def make_cache(files: Sequence[Path], size: int, mode: str, cache_dir: str | None = None) -> DecodedCache | None:
    """The cache a split of ``files`` decoded at ``size`` uses under ``mode`` (None for ``off``)."""
    if mode not in MODES:
        raise TinysetError(f"unknown data.decode_cache {mode!r}; choose one of {', '.join(MODES)}")
    if mode == "off" or not files:
        return None
    directory = cache_root(cache_dir) / "decoded" / folder_key(files, size) if mode == "disk" else None
    return DecodedCache(len(files), (3, size, size), mode, directory)
