"""Energy, energy thresholds/groups, teacher energy collection and high-energy augmentation."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tinyset.data.augment import cutmix
from tinyset.errors import TinysetError
from tinyset.kd import (
    collect_energies,
    energy,
    energy_groups,
    energy_thresholds,
    he_da_loss,
    high_energy_mix,
)


@pytest.mark.parametrize("c", [-3.0, 0.5, 7.0, 1e4])
def test_energy_shift(c):
    z = torch.randn(4, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(energy(z + c), energy(z) - c, rtol=0, atol=1e-5)


def test_energy_finite_where_naive_overflows():
    z = torch.randn(6, 10, generator=torch.Generator().manual_seed(0)) * 1e4
    naive = -4.0 * torch.log(torch.exp(z / 4.0).sum(1))  # the released formula
    assert not torch.isfinite(naive).all()
    e = energy(z)
    assert torch.isfinite(e).all()
    top = z.max(1).values  # -max - T log C <= E <= -max
    assert (e <= -top + 1e-2).all() and (e >= -top - 4.0 * torch.log(torch.tensor(10.0)) - 1e-2).all()


def test_thresholds_split_20_60_20():
    e = torch.randn(1000, generator=torch.Generator().manual_seed(3)) * 5
    low, high = energy_thresholds(e)
    counts = torch.bincount(energy_groups(e, low, high), minlength=3).tolist()
    assert abs(counts[0] - 200) <= 1 and abs(counts[1] - 600) <= 1 and abs(counts[2] - 200) <= 1
    low, high = energy_thresholds(e, 0.1, 0.3)
    assert torch.bincount(energy_groups(e, low, high), minlength=3).tolist() == [100, 600, 300]
    low, high = energy_thresholds(e, 0.0, 0.0)
    assert torch.bincount(energy_groups(e, low, high), minlength=3).tolist() == [0, 1000, 0]
    with pytest.raises(TinysetError):
        energy_thresholds(e, 0.6, 0.5)


class _DropoutTeacher(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Dropout(0.9), nn.Linear(12, 5))

    def forward(self, x):
        return self.net(x)


def test_collect_energies_uses_eval_mode_and_restores_it():
    torch.manual_seed(0)
    teacher = _DropoutTeacher().train()
    batches = [torch.randn(3, 3, 2, 2), (torch.randn(2, 3, 2, 2), torch.tensor([0, 1]))]
    e = collect_energies(teacher, batches, "cpu")
    assert teacher.training
    teacher.eval()
    with torch.no_grad():
        expected = torch.cat([energy(teacher(batches[0])), energy(teacher(batches[1][0]))])
    assert e.shape == (5,) and torch.allclose(e, expected)


def _batch(n=10, c=6, size=(7, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, *size, generator=g)
    logits = torch.randn(n, c, generator=g) * torch.linspace(0.1, 6, n).view(n, 1)
    return images, logits


def test_he_da_mixes_only_top_energy_samples():
    images, logits = _batch()
    original = images.clone()
    mixed, index = high_energy_mix(images, logits, 0.5, generator=torch.Generator().manual_seed(5))
    top = torch.topk(energy(logits), 5).indices.sort().values
    assert torch.equal(index, top)
    assert torch.equal(images, original)  # input untouched
    # same generator state -> CutMix applied to exactly the selected sub-batch
    expected, perm, lam = cutmix(images[index], 1.0, torch.Generator().manual_seed(5))
    assert torch.equal(mixed, expected) and lam < 1.0
    for j in range(len(index)):
        changed = not torch.equal(mixed[j], images[index[j]])
        assert changed == (int(perm[j]) != j)
    full = images.clone()
    full[index] = mixed
    rest = torch.ones(len(images), dtype=torch.bool)
    rest[index] = False
    assert torch.equal(full[rest], images[rest])


def test_he_da_threshold_mixup_and_edge_cases():
    images, logits = _batch(n=9, size=(3, 11), seed=1)
    e = energy(logits)
    cut = float(e.median())
    g = torch.Generator().manual_seed(0)
    mixed, index = high_energy_mix(images, logits, threshold=cut, mode="mixup", generator=g)
    assert torch.equal(index, torch.nonzero(e >= cut).reshape(-1))
    assert mixed.shape == (len(index), 3, 3, 11)
    one, idx1 = high_energy_mix(images, logits, 0.1)  # one sample: no partner, unmixed
    assert len(idx1) == 1 and torch.equal(one, images[idx1])
    none, idx0 = high_energy_mix(images, logits, 0.0)
    assert none.shape[0] == 0 and idx0.numel() == 0
    with pytest.raises(TinysetError):
        high_energy_mix(images, logits, 0.5, mode="cutout")


def test_he_da_loss_is_weighted_kd_on_mixed_batch():
    images, logits = _batch(n=8, size=(4, 6), seed=2)
    torch.manual_seed(0)
    student = nn.Sequential(nn.Flatten(), nn.Linear(72, 6))
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(72, 6))
    loss = he_da_loss(student, teacher, images, logits, None, generator=torch.Generator().manual_seed(7))
    mixed, _ = high_energy_mix(images, logits, 0.5, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        s, t = student(mixed), teacher(mixed)
        expected = 0.9 * 16 * F.kl_div(F.log_softmax(s / 4, 1), F.softmax(t / 4, 1), reduction="batchmean")
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert student[1].weight.grad is not None and teacher[1].weight.grad is None


def test_random_selection_control_picks_the_same_number_of_samples():
    from tinyset.kd.he_da import high_energy_mix

    g = torch.Generator().manual_seed(0)
    images = torch.rand(10, 3, 8, 8)
    logits = torch.randn(10, 5)
    _, idx_e = high_energy_mix(images, logits, 0.5, generator=g)
    _, idx_r = high_energy_mix(images, logits, 0.5, generator=g, select="random")
    _, idx_all = high_energy_mix(images, logits, 1.0, generator=g)
    assert len(idx_e) == len(idx_r) == 5 and len(idx_all) == 10
