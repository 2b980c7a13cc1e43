"""`tinyset kd` (full-data KD) and `tinyset eval --kd ... --he-da` on digits."""
import json

from tinyset import cli


def test_kd_command_trains_a_student_and_resumes(tmp_path, small_teacher_cfg, digits_teacher, capsys):
    sets = ["--set", f"teacher.cache_dir={small_teacher_cfg.cache_dir}", "--set", f"teacher.model={small_teacher_cfg.model}",
            "--set", "teacher.epochs=8", "--set", "teacher.batch_size=64"]
    out = tmp_path / "kd"
    args = ["kd", "--dataset", "digits", "--student", "convnet:depth=2,width=8", "--loss", "energy_kd", "--epochs", "2",
            "--he-da", "--out", str(out), "--quiet", *sets]
    assert cli.main(args) == 0
    res = json.loads((out / "result.json").read_text())
    assert res["loss"] == "energy_kd" and res["he_da"] == 0.5 and res["test_accuracy"] > 20  # 2 epochs, 10 classes
    assert (out / "student.pt").exists() and (out / "last.pt").exists()
    # a rerun finds the finished checkpoint and does not train again
    assert cli.main(args) == 0
    assert json.loads((out / "result.json").read_text())["test_accuracy"] == res["test_accuracy"]
    assert "energy_kd: student" in capsys.readouterr().out
