"""A one-glance picture of a distilled set: one row per class, up to ``max_per_class`` images each.

Distilled images are tiny (8x8 digits, 32x32 CIFAR), so cells are upscaled with nearest-neighbour
to at least ``min_cell`` pixels (blurring would hide exactly the artefacts one looks for); very
large images are downscaled so a 1000-class preview stays a sane size."""
from __future__ import annotations

import logging
import math
from typing import Sequence

import torch
from PIL import Image, ImageDraw, ImageFont

from ..errors import TinysetError

log = logging.getLogger(__name__)

NAME_COLUMN_PX = 80  # width of the class-name column (drawn only when labels and names are given)
PAD_PX = 2  # gap between cells
_BACKGROUND = (128, 128, 128)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats to uint8 by rounding: k/255 maps back to exactly k, so PNGs are lossless for them."""
    return (images.detach().cpu().float() * 255.0).round().clamp(0, 255).to(torch.uint8)


def hard_labels(labels: torch.Tensor | Sequence[int], n: int) -> torch.Tensor:
    """Class index per image from hard [N] or soft [N, K] labels (soft: argmax)."""
    y = torch.as_tensor(labels).detach().cpu()
    if y.dim() == 2:  # soft labels (logits or probabilities): the row's class is the argmax
        y = y.argmax(dim=1)
    y = y.reshape(-1).long()
    if y.numel() != n:
        raise TinysetError(f"{n} images but {y.numel()} labels")
    if y.numel() and int(y.min()) < 0:
        raise TinysetError(f"labels must be non-negative class indices, got {int(y.min())}")
    return y


def _cell_size(h: int, w: int, min_cell: int, max_cell: int) -> tuple[int, int]:
    if min(h, w) < min_cell:
        k = math.ceil(min_cell / min(h, w))
        return h * k, w * k
    if max(h, w) > max_cell:
        f = max_cell / max(h, w)
        return max(1, round(h * f)), max(1, round(w * f))
    return h, w


def _draw_name(draw: ImageDraw.ImageDraw, font, name: str, y: int, row_h: int) -> None:
    text = name
    while text and draw.textlength(text, font=font) > NAME_COLUMN_PX - 4:
        text = text[:-1]
    if text != name and len(text) > 1:
        text = text[:-1] + "~"
    draw.text((2, y + row_h // 2), text, fill=(255, 255, 255), font=font, anchor="lm")


def make_grid_image(
    images: torch.Tensor,
    labels: torch.Tensor | Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    max_per_class: int = 10,
    min_cell: int = 32,
    max_cell: int = 128,
    max_classes: int | None = 100,
) -> Image.Image:
    """Render ``images`` ([N, C, H, W], C in {1, 3}, values in [0, 1]) as an RGB grid.

    With ``labels`` (hard [N] or soft [N, K]) each row is one class present in the set, in class
    order, holding its first ``max_per_class`` images; class names, if given, label the rows.
    Without labels, images simply fill rows of ``max_per_class``. At most ``max_classes`` rows."""
    if images.dim() != 4:
        raise TinysetError(f"preview needs images shaped [N, C, H, W], got shape {list(images.shape)}")
    n, c, h, w = images.shape
    if c not in (1, 3):
        raise TinysetError(f"preview supports 1- or 3-channel images, got {c} channels")
    if n == 0:
        raise TinysetError("preview needs at least one image")
    if max_per_class < 1:
        raise TinysetError(f"max_per_class must be at least 1, got {max_per_class}")

    if labels is None:
        idx = list(range(n))
        rows: list[tuple[int | None, list[int]]] = [(None, idx[i : i + max_per_class]) for i in range(0, n, max_per_class)]
    else:
        y = hard_labels(labels, n)
        rows = []
        for cls in torch.unique(y).tolist():
            rows.append((int(cls), torch.nonzero(y == cls).flatten()[:max_per_class].tolist()))
    if max_classes is not None and len(rows) > max_classes:
        log.info("preview shows the first %d of %d rows", max_classes, len(rows))
        rows = rows[:max_classes]

    pixels = to_uint8(images)
    if c == 1:
        pixels = pixels.expand(-1, 3, -1, -1)
    pixels = pixels.permute(0, 2, 3, 1).contiguous().numpy()  # NHWC for PIL

    ch, cw = _cell_size(h, w, min_cell, max_cell)
    resample = Image.NEAREST if ch >= h else Image.BOX
    name_w = NAME_COLUMN_PX if (labels is not None and class_names is not None) else 0
    cols = max(len(members) for _, members in rows)
    size = (name_w + cols * (cw + PAD_PX) + PAD_PX, len(rows) * (ch + PAD_PX) + PAD_PX)
    canvas = Image.new("RGB", size, _BACKGROUND)
    draw = ImageDraw.Draw(canvas) if name_w else None
    font = ImageFont.load_default() if name_w else None

    for r, (cls, members) in enumerate(rows):
        top = PAD_PX + r * (ch + PAD_PX)
        for j, i in enumerate(members):
            cell = Image.fromarray(pixels[i])  # HxWx3 uint8 -> RGB
            if (ch, cw) != (h, w):
                cell = cell.resize((cw, ch), resample)
            canvas.paste(cell, (name_w + PAD_PX + j * (cw + PAD_PX), top))
        if draw is not None and cls is not None:
            name = class_names[cls] if 0 <= cls < len(class_names) else str(cls)
            try:
                _draw_name(draw, font, str(name), top, ch)
            except Exception as e:  # a font quirk must never fail a save; the row just goes unlabelled
                log.debug("could not draw class name %r: %s", name, e)
    return canvas
