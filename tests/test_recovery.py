"""E2D's crop memory and the BN-statistics matching of the shared recovery loop."""
import math

import pytest
import torch
from torch import nn

from tinyset.methods.bn_matching import BNMatcher, class_statistics
from tinyset.methods.crop_memory import CropMemory
from tinyset.methods.recovery import ExploreExploitPolicy


def test_box_above_eps_is_stored_and_below_is_not():
    mem = CropMemory(3, eps=0.5)
    boxes = torch.tensor([[0, 0, 8, 8], [1, 1, 6, 6], [2, 2, 5, 5]], dtype=torch.float32)
    mem.remember(boxes, torch.tensor([0.9, 0.5, 0.2]))
    assert mem.size(0) == 1 and mem.size(1) == 0 and mem.size(2) == 0  # 0.5 is not above eps
    assert mem.boxes[0][0] == (0.0, 0.0, 8.0, 8.0) and math.isclose(mem.losses[0][0], 0.9, rel_tol=1e-6)
    mem.remember(boxes, torch.tensor([1.5, 0.1, 0.1]))  # the same box again updates, not duplicates
    assert mem.size(0) == 1 and math.isclose(mem.losses[0][0], 1.5, rel_tol=1e-6)


def test_solved_box_is_deleted_and_unsolved_updated():
    mem = CropMemory(1, eps=0.5)
    mem.remember(torch.tensor([[0, 0, 4, 4]]), torch.tensor([2.0]))
    mem.remember(torch.tensor([[1, 1, 4, 4]]), torch.tensor([3.0]))
    mem.update(0, 0, 1.2)
    assert mem.losses[0] == [1.2, 3.0]
    mem.update(0, 1, 0.4)
    assert mem.boxes[0] == [(0.0, 0.0, 4.0, 4.0)]
    mem.update(0, 0, 0.5)
    assert mem.all_empty()


def test_sampling_follows_softmax_of_stored_losses():
    mem = CropMemory(1, eps=0.0)
    losses = [1.0, 2.0, 3.0]
    for k, l in enumerate(losses):
        mem.remember(torch.tensor([[k, 0, 4, 4]]), torch.tensor([l]))
    g = torch.Generator().manual_seed(0)
    n = 20000
    counts = torch.bincount(torch.tensor([mem.sample(0, g) for _ in range(n)]), minlength=3).double() / n
    expected = torch.softmax(torch.tensor(losses, dtype=torch.float64), 0)
    assert torch.allclose(counts, expected, atol=0.015), (counts, expected)


def test_early_stop_fires_when_all_memories_are_empty():
    pol = ExploreExploitPolicy(2, (0.5, 1.0), explore_steps=2, eps=0.5)
    x = torch.rand(2, 1, 8, 8)
    g = torch.Generator().manual_seed(0)
    _, b = pol.view(x, 0, g)
    assert not pol.observe(0, b, torch.tensor([1.0, 0.1]))  # exploring: image 0 remembers a crop
    _, b = pol.view(x, 1, g)
    assert not pol.observe(1, b, torch.tensor([0.1, 0.1]))  # end of exploration, memory not empty
    _, b = pol.view(x, 2, g)
    assert torch.equal(b[0], torch.tensor(pol.memory.boxes[0][0]))  # exploitation replays the stored box
    assert not pol.observe(2, b, torch.tensor([0.7, 0.9]))  # still hard: kept; image 1's random crop not stored
    assert pol.memory.size(1) == 0
    _, b = pol.view(x, 3, g)
    assert pol.observe(3, b, torch.tensor([0.3, 2.0]))  # solved -> every memory empty -> stop
    assert pol.stats()["stopped_at"] == 4
    assert pol.stats()["memory_occupancy"] == [1, 1, 1, 0]  # the crop memory's curve, one entry per step


def _bn_net(channels=3):
    return nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4)).eval()


def test_bn_matching_is_zero_when_batch_statistics_equal_running_ones():
    torch.manual_seed(0)
    net = _bn_net()
    x = torch.randn(16, 3, 8, 8)
    # set every BN layer's running statistics to this batch's own statistics
    feats = x
    for m in net:
        feats = feats.detach()
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(feats.mean((0, 2, 3)))
            m.running_var.copy_(feats.var((0, 2, 3), unbiased=False))
        feats = m(feats)
    matcher = BNMatcher(net)
    matcher.start()
    with torch.no_grad():
        net(x)
    assert float(matcher.loss()) < 1e-5
    matcher.start()
    with torch.no_grad():
        net(x * 3 + 1)  # different statistics -> positive loss, first layer weighted 10x
    assert float(matcher.loss()) > 1.0 and len(matcher.losses) == 2
    matcher.remove()


def test_class_conditional_term_is_near_zero_on_real_batches(digits, digits_teacher):
    """Like with like: real images of a class score near zero against their own class statistics."""
    stats = class_statistics(digits_teacher.model, digits, torch.device("cpu"), progress=False)
    matcher = BNMatcher(digits_teacher.model, class_targets=stats)
    idx = torch.cat([digits.train.class_indices(c) for c in range(10)])
    x, y = digits.train.get_batch(idx)
    matcher.start(y)
    with torch.no_grad():
        digits_teacher.model(x)
    on_real = float(sum(matcher.class_terms))
    matcher.start(y)
    with torch.no_grad():
        digits_teacher.model(torch.rand_like(x))
    on_noise = float(sum(matcher.class_terms))
    matcher.remove()
    assert on_real < 1e-3 * on_noise  # the whole class: exactly its own statistics
    sub = torch.cat([digits.train.class_indices(c)[:8] for c in range(10)])
    xs, ys = digits.train.get_batch(sub)
    matcher = BNMatcher(digits_teacher.model, class_targets=stats)
    matcher.start(ys)
    with torch.no_grad():
        digits_teacher.model(xs)
    on_small = float(sum(matcher.class_terms))
    matcher.remove()
    assert on_small < 0.2 * on_noise  # 8 real images per class: near, far below noise


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_per_image_moments_backward_matches_autograd(fmt):
    """The hand-written one-pass backward of the BN moments equals autograd's through mean and square."""
    from tinyset.methods.bn_matching import _PerImageMoments, _per_image_moments

    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 5, 6, dtype=torch.float64, generator=g).contiguous(memory_format=fmt).requires_grad_(True)
    assert torch.autograd.gradcheck(_PerImageMoments.apply, (x,))
    wm, ws = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    xf = x.detach().float().contiguous(memory_format=fmt).requires_grad_(True)
    m, s = _per_image_moments(xf)
    (m * wm + s * ws).sum().backward()
    ref = xf.detach().clone().requires_grad_(True)
    (ref.mean((2, 3)) * wm + (ref * ref).mean((2, 3)) * ws).sum().backward()
    assert torch.allclose(xf.grad, ref.grad, atol=1e-6)
    assert xf.grad.is_contiguous(memory_format=fmt)
    m, _ = _per_image_moments(xf)  # one output unused: its gradient arrives as None
    xf.grad = None
    m.sum().backward()
    assert torch.allclose(xf.grad, torch.full_like(xf, 1 / 30))
