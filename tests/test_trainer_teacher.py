"""The trainer and the teacher cache: resume gives the same weights, caching avoids retraining."""
import pytest
import torch

from tinyset.config import TeacherConfig
from tinyset.errors import TinysetError
from tinyset.eval.trainer import TrainSpec, train
from tinyset.kd import build_kd_loss
from tinyset.models import get_model
from tinyset.teachers.supervised import get_teacher, teacher_key


class Interrupt(Exception):
    pass


def _fresh(digits):
    torch.manual_seed(0)
    return get_model("convnet:depth=2,width=8", digits.info)


def test_resume_after_interruption_matches_uninterrupted(digits, tmp_path):
    spec = TrainSpec(epochs=4, batch_size=128, lr=0.05, augment="shift", shift_pad=2, cutmix=0.5)
    ce = build_kd_loss("ce")
    whole = _fresh(digits)
    train(whole, digits.train, spec, ce, seed=3, progress=False)

    ckpt = tmp_path / "last.pt"
    part = _fresh(digits)

    def stop_after_two(epoch, rec):
        if epoch == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(part, digits.train, spec, ce, seed=3, checkpoint=ckpt, progress=False, on_epoch_end=stop_after_two)
    resumed = _fresh(digits)
    res = train(resumed, digits.train, spec, ce, seed=3, checkpoint=ckpt, progress=False)
    assert res.resumed_from_epoch == 2
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_teacher_is_cached_and_reported(digits, digits_teacher, small_teacher_cfg):
    assert digits_teacher.reference["test_accuracy"] > 90.0  # digits is easy; a broken trainer is not
    again = get_teacher(digits, small_teacher_cfg, "cpu", progress=False)
    assert again.reference["sha256"] == digits_teacher.reference["sha256"]
    other = TeacherConfig(**{**small_teacher_cfg.__dict__, "epochs": 9})
    assert teacher_key(other, digits) != teacher_key(small_teacher_cfg, digits)


def test_user_checkpoint_teacher(digits, digits_teacher, tmp_path):
    cfg = TeacherConfig(checkpoint=digits_teacher.reference["path"], cache_dir=str(tmp_path))
    t = get_teacher(digits, cfg, "cpu", progress=False)
    assert t.reference["source"] == "checkpoint" and t.reference["sha256"] == digits_teacher.reference["sha256"]
    with pytest.raises(TinysetError, match="not found"):
        get_teacher(digits, TeacherConfig(checkpoint=str(tmp_path / "none.pt")), "cpu")


def test_nan_loss_is_a_clear_error(digits):
    spec = TrainSpec(epochs=1, batch_size=256, lr=1e30, optimizer="sgd", augment="none")
    with pytest.raises(TinysetError, match="loss became"):
        train(_fresh(digits), digits.train, TrainSpec(**{**spec.__dict__, "epochs": 3}), build_kd_loss("ce"), progress=False)


def test_dataloader_workers_do_not_change_the_result(digits):
    spec = TrainSpec(epochs=1, batch_size=256, lr=0.05, augment="shift", shift_pad=2)
    a, b = _fresh(digits), _fresh(digits)
    train(a, digits.train, spec, build_kd_loss("ce"), seed=1, progress=False)
    train(b, digits.train, TrainSpec(**{**spec.__dict__, "num_workers": 2}), build_kd_loss("ce"), seed=1, progress=False)
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(x, y)


def test_teacher_cache_key_is_pinned(digits):
    """Golden value: a change to what the key hashes orphans every teacher users have cached (hours of
    training at ImageNet scale). Change it on purpose only, with RECIPE_VERSION, and say so."""
    import dataclasses

    cfg = TeacherConfig()
    assert teacher_key(cfg, digits) == "digits-convnet3-ab8270f0fcef"
    # fields of checkpoint/pretrained teachers, and where the cache lives, are not part of a trained teacher
    same = dataclasses.replace(cfg, cache_dir="/elsewhere", extra=("convnet2",), trust_checkpoint=True,
                               pretrained=None, head_classes=(1, 2))
    assert teacher_key(same, digits) == teacher_key(cfg, digits)
