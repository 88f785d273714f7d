"""The smaller misleading messages: each names what is wrong and what to do, and nothing is
written where it does not belong.

- the report refuses a folder that is not a matrix and never writes into one;
- a matrix directory that could not be created whole (disk full) is removed, and the message says
  to run the same command again (there is nothing to resume);
- resume= rewrites a REPORT.md that a job's changed status made stale;
- python -m ablate.train on a folder that is not a job directory writes nothing there;
- a value of the wrong type, or a path with characters outside ASCII left unquoted, is one line
  with the key, the type expected and the value;
- a results_root too long for the system's path limit is refused before anything is created;
- a model the address-space limit cannot hold is one preflight line, not a traceback.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.errors import assert_one_error_line
from helpers.report_factory import make_matrix, seed_jobs  # noqa: E402
from helpers.tiny import TINY_BATCH, TINY_MODEL

from ablate import results
from ablate.errors import DiskFullError
from ablate.matrix import runner
from ablate.matrix.__main__ import main

TINY = [
    "experiment=smoke",
    *TINY_MODEL,
    *TINY_BATCH,
    "preflight=false",
]


def _snapshot(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.is_dir()) for p in folder.rglob("*")
    }


def _one_error(capsys, code=2) -> str:
    err = capsys.readouterr().err
    assert_one_error_line(err)
    assert "Traceback" not in err
    return err


# --------------------------------------------------------------------------- report


def test_report_refuses_a_folder_that_is_not_a_matrix_and_writes_nothing(tmp_path, capsys):
    from ablate.report.__main__ import main as report_main

    foreign = tmp_path / "project"
    (foreign / "conf").mkdir(parents=True)
    (foreign / "conf" / "config.yaml").write_text("a: 1\n")
    (foreign / "notes").mkdir()
    before = _snapshot(foreign)
    for argv in ([str(foreign)], [str(foreign), "--baseline", "conf"]):
        with pytest.raises(SystemExit) as e:
            report_main(argv)
        assert e.value.code == 2
        assert "is not a matrix directory" in _one_error(capsys)
    assert _snapshot(foreign) == before

    # Job directories copied together by hand (no matrix.json): read, but no report written there.
    copied = make_matrix(tmp_path / "copied", seed_jobs())
    (copied / results.MANIFEST).unlink()
    before = _snapshot(copied)
    with pytest.raises(SystemExit):
        report_main([str(copied), "--no-plots"])
    assert "--out DIR" in _one_error(capsys)
    assert _snapshot(copied) == before
    report_main([str(copied), "--no-plots", "--out", str(tmp_path / "out")])
    assert (tmp_path / "out" / results.REPORT).is_file() and _snapshot(copied) == before


# --------------------------------------------------------------------------- creating a matrix


@pytest.mark.parametrize("fault", ["disk full", "name too long"])
def test_a_matrix_directory_that_cannot_be_created_whole_is_removed(
    tmp_path, monkeypatch, capsys, fault
):
    real = results.atomic_write_text
    calls = []

    def failing(path, text):
        calls.append(path)
        if len(calls) == 2:  # the second job's config.yaml
            if fault == "disk full":
                raise DiskFullError(
                    f"no space left on device while writing {path}; free space there (or move "
                    "results_root) and resume"
                )
            raise OSError(errno.ENAMETOOLONG, "File name too long", str(path))
        return real(path, text)

    monkeypatch.setattr(results, "atomic_write_text", failing)
    launched = []
    monkeypatch.setattr(runner, "_launch_and_report", lambda *a: launched.append(a) or 0)
    root = tmp_path / "results"
    with pytest.raises(SystemExit):
        main([*TINY, "step=V0,V16", f"results_root={root}", "--multirun"])
    err = _one_error(capsys)
    assert "could not create the matrix directory" in err and "nothing was kept" in err
    assert "run the same command again" in err and "resume" not in err.split("nothing was kept")[1]
    if fault == "disk full":
        assert "free space there" in err
    assert list(root.iterdir()) == [] and launched == []
    monkeypatch.setattr(results, "atomic_write_text", real)
    assert main([*TINY, "step=V0,V16", f"results_root={root}", "--multirun"]) == 0  # as said
    assert len(list(root.iterdir())) == 1


def test_a_results_root_too_long_for_the_system_is_refused_before_anything_exists(tmp_path, capsys):
    parts = []
    base = len(str(tmp_path)) + 1
    while base + sum(len(p) + 1 for p in parts) < 4031 - 200:
        parts.append("d" * 200)
    parts.append("e" * (4031 - base - sum(len(p) + 1 for p in parts)))
    root = tmp_path.joinpath(*parts)
    assert len(str(root)) == 4031
    with pytest.raises(SystemExit):
        main([*TINY, "step=V0", f"results_root={root}"])
    err = _one_error(capsys)
    assert "results_root is 4,031 characters long" in err and "PATH_MAX" in err
    assert list(tmp_path.iterdir()) == []


def test_a_folder_name_too_long_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([*TINY, "step=V0", f"results_root={tmp_path / ('x' * 300)}"])
    assert "limit of 255 for one name" in _one_error(capsys)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- resume and REPORT.md


def test_resume_rewrites_a_report_a_changed_status_made_stale(tmp_path, capsys):
    """V16 failed while the matrix ran (the report says so), then was finished by hand (DONE): the
    resume records it completed and writes the report again, rather than reprinting the old one."""
    mdir = make_matrix(
        tmp_path, seed_jobs(), launcher="local", settings={"launcher": {"name": "local"}}
    )
    results.Manifest.load(mdir).update_job("V16", status="failed", error="killed by SIGKILL")
    (mdir / results.REPORT).write_text("| V16 | failed | (the old report) |\n")
    old = time.time() - 3600
    os.utime(mdir / results.REPORT, (old, old))
    assert main([f"resume={mdir}"]) == 0
    assert results.Manifest.load(mdir).job("V16")["status"] == "completed"
    text = (mdir / results.REPORT).read_text()
    assert "(the old report)" not in text and "| V16 " in text

    # A job whose DONE is newer than the report (finished by hand after it was written) as well.
    (mdir / results.REPORT).write_text("stale\n")
    os.utime(mdir / results.REPORT, (old, old))
    assert main([f"resume={mdir}"]) == 0
    assert (mdir / results.REPORT).read_text() != "stale\n"
    # and a report newer than every DONE is left alone: nothing on disk changes
    stamp = (mdir / results.REPORT).stat().st_mtime_ns
    assert main([f"resume={mdir}"]) == 0
    assert (mdir / results.REPORT).stat().st_mtime_ns == stamp


# --------------------------------------------------------------------------- the trainer's entry


def test_the_trainer_on_a_folder_that_is_not_a_job_writes_nothing(tmp_path):
    folder = tmp_path / "not-a-job"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine\n")
    before = _snapshot(folder)
    proc = subprocess.run(
        [sys.executable, "-m", "ablate.train", str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert_one_error_line(proc.stderr)
    assert "is not a job directory" in proc.stderr and "config.yaml" in proc.stderr
    assert _snapshot(folder) == before


# --------------------------------------------------------------------------- value types


@pytest.mark.parametrize(
    "override, expected",
    [
        ("budget.max_iters=abc", "budget.max_iters takes an integer or null, not 'abc'"),
        ("budget.max_iters=2.5", "budget.max_iters takes an integer or null, not 2.5 (float)"),
        ("hardware.compile=maybe", "hardware.compile takes true or false, not 'maybe'"),
        ("optim.lr=abc", "optim.lr takes a number, not 'abc'"),
        ("seed=1.5", "seed takes an integer, not 1.5 (float)"),
        ("seed=null", "seed takes an integer, not null"),
        ("seed=1,abc", "seed=abc: seed takes an integer, not 'abc'"),  # one value of a sweep
        ("report=maybe", "report takes true or false, not 'maybe'"),  # a matrix setting
        ("plugins=abc", "plugins takes a list ([a,b]) of strings, not 'abc'"),
        (
            "results_root=/tmp/résultats",
            "Hydra's override grammar takes characters outside ASCII only inside quotes; "
            "write results_root='/tmp/résultats'",
        ),
        ("data.path=/d/[x", "not an override Hydra can parse"),
    ],
)
def test_a_wrong_value_is_one_line_with_key_type_and_value(capsys, override, expected):
    with pytest.raises(SystemExit):
        main(["experiment=smoke", override, "--multirun", "--cfg", "job"])
    err = _one_error(capsys)
    assert expected in err, err
    assert "Error merging override" not in err and "LexerNoViableAlt" not in err


def test_checking_values_leaves_the_schema_they_are_checked_on_as_built():
    """Every value is checked on a copy of one schema node (ablate.schema, built once per
    process): neither an accepted value nor a refused one may leak into the next check."""
    from omegaconf import OmegaConf

    from ablate import schema
    from ablate.compose import parse_overrides
    from ablate.config import ComposedConfig
    from ablate.errors import ConfigError

    for arg in ["budget.max_iters=7", "plugins=[x]", "seed=3", "budget.max_iters=abc"]:
        (o,) = parse_overrides([arg])
        try:
            schema.check_value_type(o.key_or_group, o)
        except ConfigError:
            assert arg == "budget.max_iters=abc"
    built = OmegaConf.to_container(OmegaConf.structured(ComposedConfig))
    assert OmegaConf.to_container(schema._schema_node()) == built


@pytest.mark.parametrize(
    "override",
    [
        "budget.max_iters=12",
        "budget.max_iters='12'",  # OmegaConf converts a numeric string
        "budget.max_iters=null",
        "hardware.compile=yes",
        "optim.lr=1e-3",
        "optim.lr=3",
        "results_root='/tmp/résultats'",
        "optim.min_lr=${optim.lr}",
        "seed=1,2",
    ],
)
def test_a_value_of_the_right_type_passes(capsys, override):
    assert main(["experiment=smoke", override, "--multirun", "--cfg", "job"]) == 0


# --------------------------------------------------------------------------- memory


ALLOC = """
import re, resource, sys
import torch
from ablate.matrix.preflight import check_model
vm = int(re.search(r"VmSize:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024
limit = vm + 400 * 2**20  # room for 400 MiB more: the model needs about 600 MiB
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
cfg = dict(n_layer=8, n_head=16, n_embd=1024, block_size=64, vocab_size=50304)
problems, record = check_model(cfg)
print(problems[0])
"""


def test_a_model_beyond_the_address_space_limit_is_one_preflight_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", ALLOC], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = proc.stdout.strip()
    assert "\n" not in line and "Traceback" not in proc.stderr
    assert line.startswith("building the model (about 152M parameters")
    assert "failed to allocate memory" in line and "address space (ulimit -v)" in line
