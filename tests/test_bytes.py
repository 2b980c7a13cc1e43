"""Bytes a student needs, two ways (issue 22): ``set_bytes`` is the set file on disk (codes, clips,
labels, header and the decoder it carries) and ``student_bytes`` adds exactly what the label mode
needs (nothing, the stored soft labels' file, or the teacher's parameters at their precision).
Stored soft labels round-trip and train a student without its teacher; compress takes and records
the quantizer conventions."""
from __future__ import annotations

import math

import pytest
import torch

from tinyset.artifact import SOFT_FILE, TENSORS_FILE, load_artifact, read_set_file, save_artifact, teacher_bytes
from tinyset.cli import main
from tinyset.config import EvalConfig, RunConfig
from tinyset.errors import TinysetError
from tinyset.eval.protocol import evaluate_set, train_student
from tinyset.jobs.budget import parse_budget, set_bytes
from tinyset.jobs.compress import CompressConfig, attach_soft_labels, compress_artifact
from tinyset.jobs.distill import distill
from tinyset.models import get_model
from tinyset.quant.inloop import QuantizerConfig, set_cost_bytes
from tinyset.quant.soft_labels import decode_soft_labels, encode_soft_labels, soft_label_file_bytes
from tinyset.utils.setfile import safetensors_file_bytes


def _size(path) -> int:
    return path.stat().st_size


@pytest.fixture(scope="module")
def random_run(tmp_path_factory, digits):
    out = tmp_path_factory.mktemp("runs") / "rnd"
    distill(RunConfig(method="random", ipc=3, evaluate=False), out, progress=False)
    return out


def _net(info, seed=0):
    torch.manual_seed(seed)
    return get_model("convnet:depth=2,width=8", info).eval()


def test_set_bytes_are_the_set_file_on_disk_and_the_planner_predicts_them(tmp_path, digits, random_run):
    art = load_artifact(random_run)
    m = art.manifest
    assert m["set_bytes"] == art.set_bytes == _size(random_run / TENSORS_FILE)
    assert m["set_bytes"] > m["total_bytes"]  # the header and the decoder config are counted too
    assert m["label_mode"] == "hard" and m["student_bytes"] == m["set_bytes"] and m["label_bytes"] == {"hard": 0}
    # the budget planner's exact count of an unmade set is the file the pipeline writes
    assert set_bytes(3, 32, digits.info.shape, 10) == art.set_bytes == parse_budget("ipc3@32", digits.info.shape, 10)
    # the set file decodes on its own (the decoder rides in its header): the manifest is provenance
    alone = read_set_file(random_run / TENSORS_FILE)
    assert torch.equal(alone["images"], art.images) and torch.equal(alone["labels"], art.labels)
    # a quantizer in the loop: the planner's count (with the dataset's statistics) is the file's size
    for q in ({"name": "uniform", "bits": 2, "granularity": "channel"}, {"name": "apot", "bits": 3},
              {"name": "uniform", "bits": 3, "signed": True, "ste": "calibrated", "ties": "even"}):
        cfg = RunConfig(method="dm", ipc=2, evaluate=False)
        cfg.method_args = {"iterations": 1, "batch_real": 4, "quantizer": q}
        out = tmp_path / f"dm-{q['name']}{q['bits']}{len(q)}"
        distill(cfg, out, progress=False)
        qa = load_artifact(out)
        assert qa.set_bytes == _size(out / TENSORS_FILE)
        assert set_cost_bytes(QuantizerConfig(**q), 20, digits.info.shape, 10, digits.info) == qa.set_bytes
        # without the statistics the planner's count is an upper bound, never under
        assert set_cost_bytes(QuantizerConfig(**q), 20, digits.info.shape, 10) >= qa.set_bytes
        assert torch.equal(read_set_file(out / TENSORS_FILE)["images"], qa.images)


def test_safetensors_size_prediction_matches_the_library():
    import safetensors.torch

    g = torch.Generator().manual_seed(0)
    dtypes = [torch.uint8, torch.int64, torch.float32, torch.int32, torch.float16]
    for trial in range(40):
        ts = {}
        for i in range(int(torch.randint(1, 6, (1,), generator=g))):
            shape = torch.randint(0, 30, (int(torch.randint(0, 4, (1,), generator=g)),), generator=g).tolist()
            ts[f"t{i}.{trial}"] = torch.zeros(shape, dtype=dtypes[int(torch.randint(len(dtypes), (1,), generator=g))])
        meta = {"decoder": "x" * int(torch.randint(0, 50, (1,), generator=g))}
        specs = {k: (v.dtype, tuple(v.shape)) for k, v in ts.items()}
        assert safetensors_file_bytes(specs, meta) == len(safetensors.torch.save(ts, metadata=meta))


def test_student_bytes_add_exactly_the_teachers_parameters(tmp_path, digits):
    net = _net(digits.info)
    tb = teacher_bytes(net)
    n_params = sum(p.numel() for p in net.parameters())
    n_float_buffers = sum(b.numel() for b in net.buffers() if b.is_floating_point())
    assert tb["parameters"] == n_params and tb["bits"] == 32 and tb["bytes"] == 4 * (n_params + n_float_buffers)
    assert teacher_bytes(net, bits=16)["bytes"] == 2 * (n_params + n_float_buffers)
    x, y = digits.train.get_batch(torch.arange(10))
    out = save_artifact(tmp_path / "t", {"images": x, "labels": y}, {"dataset": "digits", "teacher_bytes": tb})
    art = load_artifact(out)
    assert art.label_mode == "teacher" and art.set_bytes == _size(out / TENSORS_FILE)
    assert art.student_bytes() - art.set_bytes == tb["bytes"] and art.student_bytes("hard") == art.set_bytes
    with pytest.raises(TinysetError, match="no byte count for label mode 'stored'"):
        art.student_bytes("stored")
    # the pipeline counts the online teacher of a soft-label run
    cfg = RunConfig(method="random", ipc=1, evaluate=False)
    cfg.teacher.model, cfg.teacher.epochs, cfg.teacher.cache_dir = "convnet:depth=2,width=8", 1, str(tmp_path / "cache")
    cfg.method = "sre2l"  # a method that needs its teacher
    cfg.method_args = {"iterations": 1, "batch_size": 4}
    res = distill(cfg, tmp_path / "sre2l", progress=False)
    m = res.manifest
    assert m["label_mode"] == "teacher" and m["student_bytes"] == m["set_bytes"] + m["teacher_bytes"]["bytes"]


def test_soft_labels_round_trip():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(7, 10, generator=g) * 3
    rel = z - z.max(1, keepdim=True).values
    t, c = encode_soft_labels(z, None, 32)  # full, float32: exact (relative to each row's maximum)
    assert torch.equal(decode_soft_labels(t, c), rel)
    t, c = encode_soft_labels(z, None, 8)  # full, 8 bits: within half a step of [-R, 0]
    r = float(t["soft.range"])
    assert (decode_soft_labels(t, c) - rel).abs().max() <= r / 255 / 2 + 1e-6
    t, c = encode_soft_labels(z, 3, 32)  # top-3 + the rest's even share
    d = decode_soft_labels(t, c)
    top = z.topk(3, dim=1).indices
    assert torch.equal(d.topk(3, dim=1).indices.sort(1).values, top.sort(1).values)
    p, q = torch.softmax(z, 1), torch.softmax(d, 1)
    assert torch.allclose(q.gather(1, top), p.gather(1, top), atol=1e-5)  # the top-k keep their probabilities
    rest = torch.ones_like(p, dtype=torch.bool).scatter_(1, top, False)
    assert torch.allclose(q[rest].view(7, 7), (p[rest].view(7, 7).sum(1, keepdim=True) / 7).expand(7, 7), atol=1e-5)
    # the stored bytes: top-3 at 4 bits: 3 values and 3 4-bit indices per sample, one float32 range
    t, c = encode_soft_labels(z, 3, 4)
    assert t["soft.codes"].numel() == math.ceil(7 * 3 * 4 / 8) and t["soft.index"].numel() == math.ceil(7 * 3 * 4 / 8)
    with pytest.raises(TinysetError):
        encode_soft_labels(z, 11, 4)
    with pytest.raises(TinysetError):
        encode_soft_labels(z, 3, 12)


def test_stored_soft_labels_are_counted_and_train_a_student_without_a_teacher(tmp_path, digits, random_run):
    net = _net(digits.info)
    out = attach_soft_labels(random_run, tmp_path / "stored", net, k=3, bits=4)
    art = load_artifact(out)
    src = load_artifact(random_run)
    assert art.label_mode == "stored" and art.set_bytes == src.set_bytes  # the same set file
    assert art.student_bytes() - art.set_bytes == _size(out / SOFT_FILE) == soft_label_file_bytes(30, 10, 3, 4)
    assert art.soft_labels.shape == (30, 10)
    with torch.no_grad():
        top1 = net(src.images).argmax(1, keepdim=True)  # stored exactly: the teacher's best class is at 0, the maximum
    assert (art.soft_labels.gather(1, top1) == 0).all() and (art.soft_labels <= 0).all()
    # a student learns from them with no teacher anywhere
    ecfg = EvalConfig(protocol="fast", student="convnet:depth=2,width=8", epochs=2, seeds=1, label_modes=("stored",),
                      random_baseline=True)
    acc = train_student(art.images, art.labels, digits, None, ecfg, "stored", 0, "cpu", progress=False,
                        soft_labels=art.soft_labels)
    assert 0.0 <= acc <= 100.0
    rep = evaluate_set(art.images, art.labels, digits, None, ecfg, "cpu", progress=False, soft_labels=art.soft_labels,
                       soft_config=art.manifest["soft_labels"])
    assert [(r["label_mode"], r["set"]) for r in rep["rows"]] == [("stored", "distilled")]  # no teacher: no random row
    with pytest.raises(TinysetError, match="stored soft labels"):
        evaluate_set(src.images, src.labels, digits, None, ecfg, "cpu", progress=False)
    # the stored mode's random subset gets the teacher's labels through the same encoding
    rep = evaluate_set(art.images, art.labels, digits, net, ecfg, "cpu", progress=False, soft_labels=art.soft_labels,
                       soft_config=art.manifest["soft_labels"])
    assert {r["set"] for r in rep["rows"]} == {"distilled", "random"}
    # a changed soft-labels file is caught
    (out / SOFT_FILE).write_bytes(b"x" + (out / SOFT_FILE).read_bytes()[1:])
    with pytest.raises(TinysetError, match="checksum"):
        load_artifact(out)


def test_compress_takes_and_records_the_quantizer_conventions(tmp_path, digits, random_run, capsys):
    cfg = CompressConfig(quantizer="uniform", bits=3, signed=True, grid="midrise", ste="calibrated", ties="even",
                         calibrate_steps=2)
    out = compress_artifact(random_run, tmp_path / "c", cfg)
    m = load_artifact(out).manifest
    q = m["decoder"]["config"]["quantizer"]
    assert {k: q[k] for k in ("grid", "ste", "ties")} == {"grid": "midrise", "ste": "calibrated", "ties": "even"}
    assert m["compression"]["quantizer_config"] == q and m["compression"]["grid"] == "midrise"
    # the defaults are the in-loop quantizer's (QuantizerConfig: None = the quantizer's own)
    assert {f: getattr(CompressConfig(), f) for f in ("grid", "ste", "ties")} == \
        {f: getattr(QuantizerConfig(), f) for f in ("grid", "ste", "ties")}
    d = load_artifact(compress_artifact(random_run, tmp_path / "d", CompressConfig(quantizer="uniform", bits=3, signed=True,
                                                                                calibrate_steps=0)))
    assert {k: d.manifest["decoder"]["config"]["quantizer"][k] for k in ("grid", "ste", "ties")} == \
        {"grid": "midtread", "ste": "clipped", "ties": "away"}
    assert main(["compress", str(random_run), "--out", str(tmp_path / "e"), "--quantizer", "apot", "--bits", "3",
                 "--ste", "calibrated", "--ties", "down", "--calibrate-steps", "1", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "ste calibrated, ties down" in text and "set_bytes" in text and "student_bytes" in text
    e = load_artifact(tmp_path / "e").manifest
    assert e["compression"]["quantizer_config"]["ties"] == "down" and e["compressed_from"]["set_bytes"] > e["set_bytes"]
    with pytest.raises(SystemExit):  # argparse names the choices
        main(["compress", str(random_run), "--out", str(tmp_path / "f"), "--grid", "sideways", "--quiet"])
    # a convention the quantizer does not have is a one-line error (apot has no even ties)
    assert main(["compress", str(random_run), "--out", str(tmp_path / "f"), "--ties", "even", "--quiet"]) == 2
    # --labels stored with a teacher checkpoint: the soft labels are stored and counted
    from tinyset.models import save_model_safetensors

    ckpt = tmp_path / "t.safetensors"
    save_model_safetensors(_net(digits.info), ckpt, "convnet:depth=2,width=8", digits.info)
    assert main(["compress", str(random_run), "--out", str(tmp_path / "g"), "--bits", "2", "--labels", "stored",
                 "--soft-k", "2", "--soft-bits", "3", "--teacher", str(ckpt), "--calibrate-steps", "1", "--quiet"]) == 0
    g = load_artifact(tmp_path / "g")
    assert g.label_mode == "stored" and g.student_bytes() == g.set_bytes + soft_label_file_bytes(30, 10, 2, 3)
    assert g.manifest["label_bytes"]["teacher"] == teacher_bytes(_net(digits.info))["bytes"]
