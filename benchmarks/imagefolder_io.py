"""The image-folder data path at speed: images/s of reading an ImageFolder tree (Imagenette at 128
px by default) with each decode cache, against what the 128-px teacher consumes.

- ``off``: every read decodes the JPEG (PIL), converts to RGB, resizes and centre-crops (timed on
  the second pass, so the files are in the OS page cache: decode cost, not disk I/O);
- ``memory`` warm: a second read of the same images from the in-process uint8 cache;
- ``disk`` warm: a later read from the memmap under the cache folder (what every later epoch,
  DataLoader worker and run sees). First passes are not reported: loading the folder already
  decodes a 500-image sample for the channel statistics, which fills part of the cache.

    PYTHONPATH=src python benchmarks/imagefolder_io.py --root ../shared/data/imagenette-128

Reads ``--images`` train images, evenly spaced, in batches of 100, one process. Rows keyed by
(dataset, mode); results/imagefolder_io.{md,json}."""
from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import torch

from common import Deadline, Rows, add_max_minutes, command_line
from tinyset.data.decoded import make_cache
from tinyset.data.imagefolder import FileSplit, load_imagefolder

log = logging.getLogger("benchmarks.imagefolder_io")


class IoRows(Rows):
    def key(self, row: dict) -> tuple:
        return (row["dataset"], row["method"])


def read_all(split, idx: torch.Tensor, batch: int = 100) -> float:
    """Images/s of reading ``idx`` through ``split.get_batch`` in batches."""
    t0 = time.perf_counter()
    for i in range(0, len(idx), batch):
        split.get_batch(idx[i:i + batch])
    return len(idx) / (time.perf_counter() - t0)


def with_cache(split: FileSplit, mode: str, cache_dir: str | None = None) -> FileSplit:
    """The same files under another decode cache: no rescan of the tree, no statistics pass."""
    return FileSplit(split.files, split.targets, split.image_size, make_cache(split.files, split.image_size, mode, cache_dir))


def warm_rate(split, idx: torch.Tensor) -> float:
    """Images/s of a second read of ``idx`` (the first fills the cache and the OS page cache)."""
    read_all(split, idx)
    return read_all(split, idx)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--root", default="../shared/data/imagenette-128")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--name", default="imagefolder_io")
    add_max_minutes(p)
    args = p.parse_args()
    deadline = Deadline(args.max_minutes)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    root = Path(args.root)
    dataset = f"{root.name}@{args.size}px"
    rows = IoRows(args.name, "The image-folder path: images/s by decode cache", command_line(), [
        f"{root.name}: train images read at {args.size} px (RGB, shorter side resized, centre crop), {args.images} "
        f"evenly spaced images in batches of 100, one process, {torch.get_num_threads()} torch threads.",
        "off: decode on every read (second pass: files in the OS page cache, so decode cost, not disk I/O); memory "
        "(warm): the second read from the in-process uint8 cache; disk (warm): a later read from the shared memmap.",
        "For scale: the 128-px ConvNet-5 teacher's forward+backward takes 48 ms per image on this CPU "
        "(results/loop_profile.md), about 21 images/s.",
    ], columns=[("dataset", "data"), ("method", "decode cache"), ("images", "images"), ("img_per_s", "images/s")])
    ds = load_imagefolder(root, args.size, "memory")
    idx = torch.linspace(0, len(ds.train) - 1, min(args.images, len(ds.train))).long()
    with tempfile.TemporaryDirectory() as tmp:
        for name, split in (("off", with_cache(ds.train, "off")), ("memory (warm)", ds.train),
                            ("disk (warm)", with_cache(ds.train, "disk", tmp))):
            if deadline.passed():
                break
            rate = warm_rate(split, idx)
            rows.add({"dataset": dataset, "method": name, "ipc": None, "bits": 8, "student": None, "seeds": 1,
                      "accuracy_mean": None, "accuracy_std": None, "synthesis_seconds": None,
                      "images": len(idx), "img_per_s": round(rate, 1)})
            log.info("%s %s: %.0f images/s", dataset, name, rate)
    print(f"wrote {rows.path} and {rows.path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
