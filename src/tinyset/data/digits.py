"""``digits``: scikit-learn's bundled handwritten digits, the dataset that ships with the package.

It needs no download and no data folder, so the README's first command and the test suite run
anywhere. The 1,797 images are 8x8 with values 0..16; we upsample them to **16x16** (bilinear) and
rescale to uint8 0..255. Why 16: at 8 pixels a random-resized crop keeps only a handful of pixels
and the ConvNet's three 2x poolings shrink the map to 1x1, so distillation and evaluation would
measure the pooling, not the method. 16x16 keeps a 2x2 map after three poolings and is still tiny.

The train/test split is stratified and seeded (``random_state=0``, 80/20: 1,437 / 360), so every
run and every machine sees the same split."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..config import DataConfig
from .base import Dataset, DatasetInfo, TensorSplit, channel_stats
from .registry import register_dataset

SIZE = 16
SPLIT_SEED = 0
TEST_FRACTION = 0.2


def _to_uint8_16(images: np.ndarray) -> torch.Tensor:
    """(N, 8, 8) floats in 0..16 -> uint8 (N, 1, 16, 16) in 0..255."""
    x = torch.from_numpy(images.astype(np.float32)).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    return (x * 255.0).round_().clamp_(0, 255).to(torch.uint8)


@register_dataset("digits", "scikit-learn's bundled 8x8 digits upsampled to 16x16, 10 classes (1,437 train / 360 test); no download")
def build_digits(arg: str | None, cfg: DataConfig) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = _to_uint8_16(bunch.images)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    idx_train, idx_test = train_test_split(
        np.arange(len(y)), test_size=TEST_FRACTION, stratify=bunch.target, random_state=SPLIT_SEED
    )
    idx_train, idx_test = torch.from_numpy(np.sort(idx_train)), torch.from_numpy(np.sort(idx_test))
    train = TensorSplit(x[idx_train].contiguous(), y[idx_train])
    test = TensorSplit(x[idx_test].contiguous(), y[idx_test])
    mean, std = channel_stats(train)
    info = DatasetInfo(
        name="digits",
        num_classes=10,
        class_names=tuple(str(i) for i in range(10)),
        shape=(1, SIZE, SIZE),
        mean=mean,
        std=std,
        kind="image",
        source="sklearn.datasets.load_digits",
        extra={"upsampled_from": 8, "split_seed": SPLIT_SEED},
    )
    return Dataset(info=info, train=train, test=test)
