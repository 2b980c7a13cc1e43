import pytest
import torch

from tinyset.data.base import DatasetInfo
from tinyset.errors import TinysetError
from tinyset.models import MODELS, get_model, load_model, save_model

IMG = DatasetInfo("img", 10, tuple(map(str, range(10))), (3, 32, 32), (0.5,) * 3, (0.25,) * 3)
VEC = DatasetInfo("vec", 4, tuple("abcd"), (12,), (0.0,), (1.0,), kind="vector")


@pytest.mark.parametrize("name", [n for n in MODELS.names() if n != "mlp"])
def test_every_image_model_builds_and_runs(name):
    m = get_model(name, IMG).eval()
    assert m(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_mlp_on_vectors():
    m = get_model("mlp", VEC).eval()
    assert m(torch.randn(3, 12)).shape == (3, 4)


def test_torchvision_name_and_args():
    assert get_model("tv:mobilenet_v3_small", IMG).eval()(torch.rand(1, 3, 32, 32)).shape == (1, 10)
    m = get_model("convnet:depth=2,width=16,norm=instance", IMG)
    assert m.net.features[0].out_channels == 16 and isinstance(m.net.features[1], torch.nn.GroupNorm)


def test_normalization_is_inside_the_model():
    m = get_model("convnet3", IMG)
    assert torch.allclose(m.mean.flatten(), torch.tensor([0.5] * 3)) and torch.allclose(m.std.flatten(), torch.tensor([0.25] * 3))


def test_unknown_model_and_bad_args():
    with pytest.raises(TinysetError, match="unknown model 'nope'"):
        get_model("nope", IMG)
    with pytest.raises(TinysetError, match="bad arguments"):
        get_model("convnet:colour=red", IMG)
    with pytest.raises(TinysetError, match="pools a 32px image below one pixel"):
        get_model("convnet:depth=6", IMG)


def test_checkpoint_round_trip_and_errors(tmp_path):
    m = get_model("convnet:depth=2,width=8", IMG)
    save_model(m, tmp_path / "m.pt", "convnet:depth=2,width=8", IMG)
    m2, _ = load_model(tmp_path / "m.pt", IMG)
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(m.eval()(x), m2.eval()(x))
    with pytest.raises(TinysetError, match="not found"):
        load_model(tmp_path / "missing.pt", IMG)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TinysetError, match="could not be read"):
        load_model(tmp_path / "bad.pt", IMG)
    other = DatasetInfo("o", 5, tuple("abcde"), (3, 32, 32), (0.5,) * 3, (0.25,) * 3)
    with pytest.raises(TinysetError, match="trained for 10 classes"):
        load_model(tmp_path / "m.pt", other)


def test_bare_state_dict_needs_and_uses_an_architecture(tmp_path):
    net = get_model("resnet18_cifar", IMG, normalize=False)
    torch.save(net.state_dict(), tmp_path / "weights.pth")
    with pytest.raises(TinysetError, match="bare state_dict; name its architecture"):
        load_model(tmp_path / "weights.pth", IMG)
    m, _ = load_model(tmp_path / "weights.pth", IMG, model_spec="resnet18_cifar")
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(m.eval()(x), net.eval()((x - 0.5) / 0.25), atol=1e-5)
    with pytest.raises(TinysetError, match="does not fit model 'convnet3'"):
        load_model(tmp_path / "weights.pth", IMG, model_spec="convnet3")
