"""The two crop resizers RDED can use: grid (one grid_sample) and box (torchvision's resized_crop)."""
import torch
import torchvision.transforms.functional as TF

from tinyset.data import augment as A


def test_box_resize_is_torchvisions_resized_crop():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 32, 32, generator=g)
    boxes = A.sample_rrc_boxes(6, 32, 32, (0.08, 1.0), (1.0, 1.0), generator=g)
    out = A.crop_resize_in_box(x, boxes, 32)
    for img, o, (x0, y0, w, h) in zip(x, out, boxes.long().tolist()):
        ref = TF.resized_crop(img, y0, x0, h, w, [32, 32], antialias=True)
        assert torch.allclose(o, ref, atol=1e-5)


def test_grid_and_box_agree_inside_and_differ_only_at_the_crop_edge():
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    box = torch.tensor([[8.0, 8.0, 16.0, 16.0]])  # a 16-px crop upsampled 2x
    grid, inbox = A.crop_resize(x, box, 32), A.crop_resize_in_box(x, box, 32)
    assert torch.allclose(grid[..., 1:-1, 1:-1], inbox[..., 1:-1, 1:-1], atol=1e-5)
    assert not torch.allclose(grid[..., 0, :], inbox[..., 0, :], atol=1e-3)  # the edge row samples outside the box
    whole = torch.tensor([[0.0, 0.0, 32.0, 32.0]])
    assert torch.allclose(A.crop_resize(x, whole, 32), x, atol=1e-5)
    assert torch.allclose(A.crop_resize_in_box(x, whole, 32), x, atol=1e-6)
