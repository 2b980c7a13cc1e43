"""Scale-out under torchrun (2 gloo ranks on CPU): the artifact and the evaluation are identical to a
single process, a run killed with SIGKILL mid-way (1 or 2 processes) resumes to the identical
artifact without recomputing finished units, and teacher training + ``tinyset kd`` run under DDP.

Every subprocess runs with one intra-op thread (torchrun's default), so the single-process
reference uses the same kernels as the ranks: bit-equality is a property of the unit seeding,
not of luck in float summation order."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tinyset import distributed as dist
from tinyset.artifact import load_artifact

pytestmark = pytest.mark.slow

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _env(cache: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), TINYSET_CACHE=str(cache),
               OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def _cmd(nproc: int, *args: str) -> list[str]:
    if nproc == 1:
        return [sys.executable, "-m", "tinyset", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "tinyset", *args]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, digits_teacher):
    root = tmp_path_factory.mktemp("dist")
    teacher = digits_teacher.reference["path"]
    distill = ["distill", "--dataset", "digits", "--method", "e2d", "--ipc", "2", "--teacher", teacher,
               "--set", "method_args.iterations=30", "--set", "method_args.batch_size=2", "--set", "method_args.log_every=5",
               "--quiet"]
    evals = ["--set", "eval.epochs=1", "--set", "eval.seeds=2", "--set", "eval.student=convnet:depth=2,width=8",
             "--set", "eval.batch_size=20"]
    ref = root / "one"
    subprocess.run(_cmd(1, *distill, *evals, "--out", str(ref)), env=_env(root / "cache"), check=True, timeout=120)
    return {"root": root, "distill": distill, "evals": evals, "ref": ref, "env": _env(root / "cache")}


def test_two_ranks_give_the_single_process_artifact_and_evaluation(setup):
    out = setup["root"] / "two"
    r = subprocess.run(_cmd(2, *setup["distill"], *setup["evals"], "--out", str(out)), env=setup["env"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = load_artifact(setup["ref"]), load_artifact(out)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert b.manifest["synthesis"]["world_size"] == 2 and len(b.manifest["synthesis"]["units"]) == 10
    assert b.manifest["synthesis"]["teacher_backward_images"] == a.manifest["synthesis"]["teacher_backward_images"]
    ea, eb = (json.loads((p / "eval.json").read_text()) for p in (setup["ref"], out))
    assert ea["rows"] == eb["rows"]  # students spread over ranks, gathered on rank 0
    assert {json.loads(line).get("rank") for line in (out / "log.jsonl").read_text().splitlines()} == {0, 1}
    assert r.stdout.count("distilled digits") == 1  # only rank 0 prints


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _kill_midway(cmd: list[str], env: dict, partial: Path, at_least: int, total: int) -> int:
    """Start ``cmd`` and SIGKILL it and all its processes once ``at_least`` units are on disk;
    return how many finished units the kill left."""
    if not Path("/proc").is_dir():
        pytest.skip("killing a run and its workers needs /proc (Linux)")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list(partial.glob("unit_*.safetensors"))) >= at_least:
                break
            time.sleep(0.01)
    finally:
        # torchrun starts each worker in its own session, so killing the launcher's group is not
        # enough: kill every process of the run at once, as a machine dying would
        for pid in [proc.pid, *_descendants(proc.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
    time.sleep(0.2)  # let the kernel finish the kill before we count
    done = len(list(partial.glob("unit_*.safetensors")))
    assert at_least <= done < total, f"kill landed outside the synthesis ({done} of {total} units)"
    return done


@pytest.mark.parametrize("nproc", [1, 2])
def test_sigkill_mid_run_resumes_to_the_identical_artifact(setup, nproc):
    out = setup["root"] / f"killed{nproc}"
    partial = out.parent / f".{out.name}.partial"
    cmd = _cmd(nproc, *setup["distill"], "--no-eval", "--out", str(out))
    done = _kill_midway(cmd, setup["env"], partial, at_least=3, total=10)
    assert not out.exists()
    for f in partial.glob("unit_*.safetensors"):  # every unit on disk is whole (temp + rename)
        assert f.with_suffix(".json").is_file()
    r = subprocess.run(cmd, env=setup["env"], timeout=120, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = load_artifact(setup["ref"]), load_artifact(out)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    resumed = [u for u in b.manifest["synthesis"]["units"] if u.get("resumed")]
    assert len(resumed) == done  # a finished unit is never recomputed
    assert not partial.exists()


def test_teacher_and_kd_train_under_ddp(tmp_path):
    """Two ranks train a teacher (not cached yet) and then a KD student, both as DDP; rank 0 writes
    the checkpoints. The weights are not compared with one process: DDP changes batch composition."""
    out = tmp_path / "kd"
    cmd = _cmd(2, "kd", "--dataset", "digits", "--teacher-model", "convnet:depth=2,width=8", "--set", "teacher.epochs=1",
               "--epochs", "1", "--student", "convnet:depth=2,width=8", "--out", str(out), "--quiet")
    r = subprocess.run(cmd, env=_env(tmp_path / "cache"), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "student.pt").is_file() and (out / "last.pt").is_file()
    result = json.loads((out / "result.json").read_text())
    assert result["world_size"] == 2 and 0 <= result["test_accuracy"] <= 100
    meta = json.loads(next((tmp_path / "cache" / "teachers").glob("*/meta.json")).read_text())
    assert meta["world_size"] == 2
    ckpt = torch.load(out / "last.pt", weights_only=False)
    assert len(ckpt["rank_generators"]) == 2 and ckpt["epoch"] == 1


def test_helpers_are_no_ops_in_one_process():
    assert not dist.is_distributed() and dist.get_rank() == 0 and dist.get_world_size() == 1 and dist.is_main_process()
    assert dist.shard(list(range(7)), 1, 3) == [1, 4] and dist.shard([1, 2]) == [1, 2]
    assert dist.all_gather_objects({"a": 1}) == [{"a": 1}] and dist.broadcast_object(5) == 5
    assert dist.all_reduce_sum([1.0, 2.0]) == [1.0, 2.0]
    dist.barrier()
    assert dist.init_distributed("cpu").world_size == 1  # no torchrun environment: a single process
