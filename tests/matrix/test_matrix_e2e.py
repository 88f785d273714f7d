"""The matrix runner end to end on CPU: real torchrun jobs, real files, real report."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers.tiny import TINY_BATCH, TINY_MODEL
from torch import nn

from ablate import results
from ablate.matrix.__main__ import main

pytestmark = pytest.mark.slow

# A model small enough that a torchrun job is dominated by process start-up.
TINY = [
    *TINY_MODEL,
    *TINY_BATCH,
    "data.val_windows=4",
    "data.val_tokens=1024",
    "budget.eval_interval=5",
    "budget.log_interval=5",
]


def _only_matrix_dir(root: Path) -> Path:
    dirs = sorted(root.glob("test_matrix_results_*"))
    assert len(dirs) == 1, dirs
    return dirs[0]


def test_smoke_matrix_runs_four_steps_and_reports(tmp_path, capsys):
    # warmup_iters=20 > max_iters=12: the box is too short to leave warmup (issue 12).
    rc = main(
        [
            "experiment=smoke",
            "step=V0,V16,V17,V18",
            "budget.box_seconds=3",
            "budget.max_iters=12",
            "optim.warmup_iters=20",
            f"results_root={tmp_path}",
            "--multirun",
            *TINY,
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out[-3000:]
    mdir = _only_matrix_dir(tmp_path)
    manifest = results.Manifest.load(mdir)
    assert [j["name"] for j in manifest.jobs] == ["V0", "V16", "V17", "V18"]
    assert all(j["status"] == "completed" and j["exit_code"] == 0 for j in manifest.jobs)
    for name in ("V0", "V16", "V17", "V18"):
        jd = results.JobDir(mdir / name)
        for f in (jd.config, jd.env, jd.metrics, jd.summary, jd.log, jd.done):
            assert f.is_file(), f
        s = jd.read_summary()
        assert s["status"] == "completed" and s["step"] == name and s["iterations"] > 0
        # checked by the preflight at the job's shapes (its micro-batch of 4, TINY_BATCH) and
        # again on the trained weights
        c = s["causality"]
        assert c["checked"] is True and c["init"]["ok"] is True and c["trained"]["ok"] is True
        assert c["init"]["shapes"] == [[4, 31], [4, 32]] and c["trained"]["weights"] == "trained"
    assert "RA + R-MLP" in (mdir / "V18" / "config.yaml").read_text()
    report = (mdir / results.REPORT).read_text()
    for row in ("| V0", "| V16", "| V17", "| V18"):
        assert row in report
    # A smoke matrix is a pipeline check that never left warmup: said at the top, no verdicts.
    assert report.startswith(
        "# Pipeline check (smoke preset), not evidence about the architectures"
    )
    top = report.split("## Results", 1)[0]
    assert "## Warnings" in top and "ended in warmup" in top and "of 20 warmup" in top
    results_table = report.split("## Results", 1)[1].split("\n\n")[1]
    assert "**" not in results_table and results_table.count("(no verdict)") == 3
    for name in ("V0", "V16", "V17", "V18"):
        assert (mdir / name / results.FINAL_EVAL).is_file()
    # The end of the output: warnings, the main table and where the full report is; not the report.
    tail = out[out.rfind("## Warnings") :]
    assert "| Step" in tail and "| V18" in tail and "ended in warmup" in tail
    assert f"Full report: {mdir / results.REPORT}" in tail and "## Runs" not in out
    # Disk: the smoke preset keeps no model files once DONE; one log per job; well under 50 MB.
    for name in ("V0", "V16", "V17", "V18"):
        jd = results.JobDir(mdir / name)
        assert (
            not jd.checkpoint.exists()
            and not jd.weights.exists()
            and not (jd.path / "stdout.log").exists()
        )
        log = jd.log.read_text()
        assert log.count("optim group decay") == 1, "train.log holds each line once"
    size = sum(p.stat().st_size for p in mdir.rglob("*") if p.is_file())
    assert size < 50 * 2**20, f"smoke matrix results take {size / 2**20:.1f} MB"
    # Resuming a finished matrix changes nothing on disk: bytes and mtimes stay as they were.
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in mdir.rglob("*") if p.is_file()}
    assert main([f"resume={mdir}"]) == 0
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in mdir.rglob("*") if p.is_file()}
    assert after == before
    assert "| V18" in capsys.readouterr().out  # the summary is printed again
    # the preflight prints each config's cost; 10 probes since the targets probe went (targets never
    # reach the model)
    assert "causality V0: causal, 10 probe(s)" in out


def test_a_failing_job_is_isolated_and_the_matrix_exits_nonzero(tmp_path, capsys):
    rc = main(
        [
            "experiment=smoke",
            "step=V0",
            "optim.lr=0.001,1000000.0",
            "optim.warmup_iters=0",
            "optim.grad_clip=0",
            "budget.max_iters=30",
            f"results_root={tmp_path}",
            "--multirun",
            *TINY,
        ]
    )
    capsys.readouterr()
    assert rc == 1
    manifest = results.Manifest.load(_only_matrix_dir(tmp_path))
    status = {j["name"]: j for j in manifest.jobs}
    assert set(status) == {"V0_lr0.001", "V0_lr1000000.0"}
    assert status["V0_lr0.001"]["status"] == "completed"
    bad = status["V0_lr1000000.0"]
    assert bad["status"] == "failed" and bad["exit_code"] != 0 and bad["error"]
    jd = manifest.job_dir("V0_lr1000000.0")
    assert jd.metrics.is_file() and not jd.is_done()  # partial metrics kept


@pytest.mark.timeout(1200)  # V0 whole, V16 to a checkpoint, then the resume: minutes under load
def test_resume_after_killing_the_runner_reruns_only_unfinished_jobs(tmp_path):
    args = [
        "experiment=smoke",
        "step=V0,V16",
        "budget.box_seconds=600",
        "budget.max_iters=40",
        "budget.checkpoint_interval_iters=10",
        f"results_root={tmp_path}",
        "--multirun",
        *TINY,
    ]
    runner = subprocess.Popen(
        [sys.executable, "-m", "ablate.matrix", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        # V0 trains to DONE first: at a load of 5 on 2 cores that took 185 s, and 240 s ran out
        # before V16 had started.
        deadline = time.monotonic() + 480
        ckpt = None
        while time.monotonic() < deadline:
            dirs = list(tmp_path.glob("test_matrix_results_*"))
            if (
                dirs
                and (dirs[0] / "V0" / "DONE").exists()
                and (dirs[0] / "V16" / "checkpoint.pt").exists()
            ):
                ckpt = dirs[0] / "V16" / "checkpoint.pt"
                break
            assert runner.poll() is None, runner.stdout.read().decode()[-3000:]
            time.sleep(0.2)
        assert ckpt is not None, "V16 never checkpointed"
        # The hardest stop: the runner and the job's own processes all die at once with no chance
        # to clean up (a crashed host). A job whose runner alone died trains on as an orphan:
        # tests/matrix/test_parent_death.py proves that part.
        os.kill(runner.pid, signal.SIGKILL)
        subprocess.run(["pkill", "-KILL", "-f", str(ckpt.parent)], check=False)
        runner.wait(timeout=30)
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
    mdir = _only_matrix_dir(tmp_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _job_process_alive(mdir / "V16"):
        subprocess.run(["pkill", "-KILL", "-f", str(mdir / "V16")], check=False)
        time.sleep(0.5)
    assert not _job_process_alive(mdir / "V16")
    v0_done = (mdir / "V0" / "DONE").stat().st_mtime_ns
    v0_metrics = (mdir / "V0" / "metrics.jsonl").read_text()
    assert not (mdir / "V16" / "DONE").exists()

    proc = subprocess.run(
        [sys.executable, "-m", "ablate.matrix", f"resume={mdir}"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "1 job(s) finished, 1 to run" in proc.stdout
    assert (mdir / "V0" / "DONE").stat().st_mtime_ns == v0_done
    assert (mdir / "V0" / "metrics.jsonl").read_text() == v0_metrics
    s16 = results.JobDir(mdir / "V16").read_summary()
    assert s16["status"] == "completed" and s16["resumed"] >= 1 and s16["iterations"] == 40
    iters = [
        r["iter"]
        for r in results.read_metrics(mdir / "V16" / "metrics.jsonl")[0]
        if r.get("kind") == "train"
    ]
    assert iters == sorted(set(iters)), "a resumed job must not log an iteration twice"
    assert all(j["status"] == "completed" for j in results.Manifest.load(mdir).jobs)


def _job_process_alive(job_dir: Path) -> bool:
    out = subprocess.run(["pgrep", "-f", str(job_dir)], capture_output=True, text=True).stdout
    return bool(out.strip())


class LeakyAttention(nn.Module):
    """Attention without a causal mask: what V17/V18 did in the system we replace."""

    def __init__(self, config, layer_idx):
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=False)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


def test_preflight_refuses_a_leaking_step_before_anything_trains(
    tmp_path, repo, monkeypatch, capsys
):
    import models

    monkeypatch.setitem(models.ATTENTION, "leaky", LeakyAttention)
    conf = tmp_path / "conf"
    shutil.copytree(repo / "conf", conf)
    (conf / "step" / "VLEAK.yaml").write_text(
        "# @package _global_\nstep:\n  name: VLEAK\n  architecture: leaks the future\nmodel:\n  attention: leaky\n"
    )
    monkeypatch.setenv("ABLATE_CONF_DIR", str(conf))
    out_root = tmp_path / "results"
    with pytest.raises(SystemExit) as e:
        main(["experiment=smoke", "step=V0,VLEAK", f"results_root={out_root}", "--multirun", *TINY])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert "preflight failed for VLEAK: model is not causal" in err
    assert "preflight failed for V0" not in err
    assert not list(out_root.glob("test_matrix_results_*")), "nothing may run when preflight fails"


@pytest.mark.parametrize(
    "args, expected",
    [
        (["hardware.device=cuda"], "no CUDA GPU is visible"),
        (["optim.tokens_per_iter=1000"], "optim.tokens_per_iter=1000 is not a multiple of"),
        (["model.ra_rank=32", "step=V16"], "ra_rank"),
        (["data.source=shards", "data.path=/nonexistent/*.bin"], "/nonexistent"),
        (["hardware.micro_batch=0"], "hardware.micro_batch=0"),
        (["seed=-1"], "seed=-1 must be a non-negative integer"),
    ],
)
def test_preflight_bad_input_is_one_line_per_job(args, expected, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["experiment=smoke", f"results_root={tmp_path}", *TINY, *args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and expected in err and "Traceback" not in err


def test_resume_of_a_directory_that_is_not_a_matrix_is_refused(tmp_path, capsys):
    (tmp_path / "something").mkdir()
    with pytest.raises(SystemExit) as e:
        main([f"resume={tmp_path / 'something'}"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "is not a matrix directory" in err
