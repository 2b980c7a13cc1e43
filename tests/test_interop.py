"""Interop: DD-Ranking export and import back (same images, labels and soft labels), ImageFolder and
tensor-file import that ``tinyset eval`` scores, the optional HF ``datasets`` export and the
optional TensorBoard mirror of log.jsonl."""
from __future__ import annotations

import json

import pytest
import torch

from tinyset import cli
from tinyset.artifact import export_imagefolder, load_artifact, save_artifact
from tinyset.artifact.interop import export_ddranking, import_set, teacher_logits
from tinyset.errors import TinysetError


@pytest.fixture()
def artifact(tmp_path, digits, digits_teacher):
    """Two real digits per class, saved as a tinyset artifact whose manifest names the teacher."""
    idx = torch.cat([digits.train.class_indices(c)[:2] for c in range(10)])
    x, y = digits.train.get_batch(idx)
    info = digits.info
    manifest = {"dataset": info.name, "dataset_info": info.to_dict(), "ipc": 2, "method": "random", "seed": 0,
                "normalization": {"mean": list(info.mean), "std": list(info.std)}, "teacher": digits_teacher.reference,
                "synthesis": {"seconds": 0.0}, "wall_time_seconds": 0.0}
    return save_artifact(tmp_path / "art", {"images": x, "labels": y}, manifest, class_names=list(info.class_names))


def test_ddranking_round_trip_keeps_images_labels_and_soft_labels(artifact, tmp_path, digits_teacher):
    out = export_ddranking(artifact, tmp_path / "ddr")
    art = load_artifact(artifact)
    images = torch.load(out / "images.pt", weights_only=True)
    soft = torch.load(out / "labels.pt", weights_only=True)
    assert torch.equal(images, art.images) and soft.shape == (20, 10)
    with torch.no_grad():
        assert torch.allclose(soft, digits_teacher.model(art.images).float(), atol=1e-5)
    assert torch.equal(soft.argmax(1), teacher_logits(art).argmax(1))
    side = json.loads((out / "tinyset.json").read_text())
    assert side["ipc"] == 2 and side["pixel_range"] == [0.0, 1.0]

    back = load_artifact(import_set(out, tmp_path / "back", dataset="digits"))
    assert torch.equal(back.images, art.images) and torch.equal(back.labels, art.labels)
    assert torch.equal(back.tensors["soft_labels"], soft)
    assert back.manifest["method"] == "imported" and back.manifest["method_config"]["source_kind"] == "ddranking"

    (out / "hard_labels.pt").unlink()  # DD-Ranking itself has none: class-major order is implied
    again = load_artifact(import_set(out, tmp_path / "again", dataset="digits"))
    assert torch.equal(again.labels, art.labels)


def test_imported_imagefolder_evaluates(artifact, tmp_path, digits_teacher, capsys):
    folder = export_imagefolder(artifact, tmp_path / "png")
    run = tmp_path / "imported"
    assert cli.main(["import", str(folder), str(run), "--dataset", "digits"]) == 0
    art, src = load_artifact(run), load_artifact(artifact)
    assert torch.equal(art.labels, src.labels)
    assert (art.images - src.images).abs().max() <= 0.5 / 255 + 1e-6  # PNG keeps 8 bits per pixel
    assert cli.main(["eval", str(run), "--seeds", "1", "--epochs", "1", "--student", "convnet:depth=2,width=8",
                     "--teacher", digits_teacher.reference["path"], "--label-modes", "soft,hard", "--quiet"]) == 0
    report = json.loads((run / "eval.json").read_text())
    assert {(r["label_mode"], r["set"]) for r in report["rows"]} == {(m, s) for m in ("soft", "hard") for s in ("distilled", "random")}
    assert report["method"] == "imported"


def test_tensor_file_import_undoes_normalisation_and_errors(tmp_path, digits):
    idx = torch.cat([digits.train.class_indices(c)[:1] for c in range(10)])
    x, y = digits.train.get_batch(idx)
    mean, std = torch.tensor(digits.info.mean).view(1, -1, 1, 1), torch.tensor(digits.info.std).view(1, -1, 1, 1)
    torch.save({"x": (x - mean) / std, "y": y}, tmp_path / "set.pt")  # how many reference codes store them
    art = load_artifact(import_set(tmp_path / "set.pt", tmp_path / "run", dataset="digits"))
    assert torch.allclose(art.images, x, atol=1e-5) and torch.equal(art.labels, y)

    (tmp_path / "bad" / "cat").mkdir(parents=True)
    with pytest.raises(TinysetError, match="not a class of digits"):
        import_set(tmp_path / "bad", tmp_path / "r2", dataset="digits")
    with pytest.raises(TinysetError, match="does not exist"):
        import_set(tmp_path / "nope", tmp_path / "r3", dataset="digits")
    torch.save(torch.rand(7, 1, 16, 16), tmp_path / "odd.pt")
    with pytest.raises(TinysetError, match="cannot be class-major"):
        import_set(tmp_path / "odd.pt", tmp_path / "r4", dataset="digits")
    assert cli.main(["export", str(tmp_path / "run"), "--to", "zip", str(tmp_path / "z")]) == 2


def test_hf_datasets_export(artifact, tmp_path):
    datasets = pytest.importorskip("datasets", reason="optional extra tinyset[hf] (Hugging Face datasets) not installed")
    out = cli.main(["export", str(artifact), "--to", "hf", str(tmp_path / "hf")])
    assert out == 0
    ds = datasets.load_from_disk(str(tmp_path / "hf"))
    art = load_artifact(artifact)
    assert ds.num_rows == 20 and ds.features["label"].names == art.class_names
    assert ds["label"] == art.labels.tolist()


def test_tensorboard_mirror_of_the_run_log(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard", reason="optional extra tinyset[tensorboard] not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tinyset.utils.runlog import JsonlLog

    monkeypatch.setenv("TINYSET_TENSORBOARD", "1")
    log = JsonlLog(tmp_path / "log.jsonl")
    for it in range(3):
        log.write("e2d c0_s0-1", it=it, ce=1.0 / (it + 1), lr=0.1)
    log.tensorboard.writer.close()
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert [e.value for e in acc.Scalars("e2d c0_s0-1/ce")] == pytest.approx([1.0, 0.5, 1 / 3])
    assert [e.step for e in acc.Scalars("e2d c0_s0-1/ce")] == [0, 1, 2]
    assert len(tmp_path.joinpath("log.jsonl").read_text().splitlines()) == 3


def test_import_records_its_teacher_and_eval_refuses_an_implicit_retrain(artifact, tmp_path, digits_teacher, capsys):
    """An imported set finds the teacher that made it; without one, eval says what it would train and stops."""
    import yaml

    folder = export_imagefolder(artifact, tmp_path / "png")
    ckpt = digits_teacher.reference["path"]
    run = import_set(folder, tmp_path / "with_ckpt", dataset="digits", teacher=ckpt)
    assert yaml.safe_load((run / "config.yaml").read_text())["teacher"]["checkpoint"] == ckpt
    assert load_artifact(run).manifest["teacher"]["sha256"] == digits_teacher.reference["sha256"]
    # a run directory as --teacher: its teacher config and the very checkpoint its manifest names
    src = tmp_path / "src_run"
    src.mkdir()
    (src / "config.yaml").write_text(yaml.safe_dump({"teacher": {"model": "convnet:depth=3,width=32", "epochs": 8}}))
    (src / "manifest.json").write_text(json.dumps({"teacher": digits_teacher.reference}))
    run2 = import_set(folder, tmp_path / "from_run", dataset="digits", teacher=src)
    t = yaml.safe_load((run2 / "config.yaml").read_text())["teacher"]
    assert t["checkpoint"] == ckpt and t["model"] == "convnet:depth=3,width=32" and t["epochs"] == 8
    with pytest.raises(TinysetError, match="not a checkpoint file or a tinyset run directory"):
        import_set(folder, tmp_path / "bad_teacher", dataset="digits", teacher=tmp_path / "png")
    # no teacher recorded and none cached: eval refuses to train one unless asked, before any training
    bare = tmp_path / "bare"
    assert cli.main(["import", str(folder), str(bare), "--dataset", "digits"]) == 0
    assert "teacher: none recorded" in capsys.readouterr().out
    code = cli.main(["eval", str(bare), "--seeds", "1", "--epochs", "1", "--quiet",
                     "--set", f"teacher.cache_dir={tmp_path / 'empty_cache'}"])
    err = capsys.readouterr().err
    assert code == 2 and "not cached" in err and "--train-teacher" in err
    assert not (bare / "eval.json").exists() and not (tmp_path / "empty_cache" / "teachers").exists()
    # the recorded checkpoint is used as is
    assert cli.main(["eval", str(run), "--seeds", "1", "--epochs", "1", "--student", "convnet:depth=2,width=8",
                     "--quiet", "--set", "eval.random_baseline=false"]) == 0
    assert json.loads((run / "eval.json").read_text())["teacher"]["sha256"] == digits_teacher.reference["sha256"]
