"""No code runs from a results folder: results folders are shared and copied around, so a file in
one is data, never code. Files planted to run code (a pickle in submitit's folder, a YAML tag, a
checkpoint whose pickle names a function) are read by every reader that meets them, and the code
never runs; a scan of the source keeps the readers that could run code out.
"""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import pytest
import torch
from helpers.tiny import TINY_BATCH, TINY_MODEL

from ablate import results
from ablate.launch.slurm import poll
from ablate.matrix import runner
from ablate.matrix.__main__ import main

SRC = Path(__file__).resolve().parents[2] / "src"

TINY = [
    "experiment=smoke",
    *TINY_MODEL,
    *TINY_BATCH,
    "preflight=false",
]


class _Planted:
    """Unpickling this creates ``marker``: proof that the pickle was loaded."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def unpickled(monkeypatch) -> list[str]:
    """Every unpickling, wherever it happens (recorded, then done: a catch-all cannot hide it)."""
    calls: list[str] = []
    for name in ("load", "loads"):
        real = getattr(pickle, name)

        def spy(*a, _real=real, _name=name, **k):
            calls.append(_name)
            return _real(*a, **k)

        monkeypatch.setattr(pickle, name, spy)
    return calls


def _slurm_matrix(tmp_path: Path, monkeypatch) -> Path:
    """A Slurm matrix as `launcher.slurm.wait=false` leaves it: job V0 queued as Slurm job 4242_0."""
    monkeypatch.setattr(runner, "_launch_and_report", lambda manifest, cfgs, settings: 0)
    assert main([*TINY, "step=V0", f"results_root={tmp_path}", "launcher=slurm"]) == 0
    monkeypatch.undo()
    (mdir,) = tmp_path.glob("test_matrix_results_*")
    manifest = results.Manifest.load(mdir)
    manifest.update(slurm_folder=str(mdir / results.SUBMITIT))
    manifest.update_job("V0", status=results.RUNNING, slurm_job_id="4242_0")
    return mdir


def _plant_result(mdir: Path, marker: Path) -> Path:
    folder = mdir / results.SUBMITIT
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "4242_0_0_result.pkl"
    path.write_bytes(pickle.dumps(("success", _Planted(marker))))
    (folder / "4242_0_0_log.err").write_text(
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\n'
        "ablate.lock.LockHeld: /m/V0 is in use\n"
        "srun: error: node1: task 0: Exited with exit code 1\n"
    )
    return path


def test_a_planted_submitit_pickle_is_never_loaded(tmp_path, monkeypatch, capsys, unpickled):
    """Slurm no longer knows the job (squeue and sacct forgot it): status= and wait= decide how it
    ended from the job's files and the task's text log, never from submitit's result pickle."""
    mdir = _slurm_matrix(tmp_path, monkeypatch)
    marker = tmp_path / "pickle-ran"
    _plant_result(mdir, marker)
    monkeypatch.setattr(poll, "slurm_states", lambda ids: {j: poll.GONE for j in ids})

    main([f"status={mdir}"])
    assert not marker.exists() and unpickled == []
    entry = results.Manifest.load(mdir).job("V0")
    assert entry["status"] == results.FAILED
    assert entry["error"] == "ablate.lock.LockHeld: /m/V0 is in use"  # the traceback's last line

    results.Manifest.load(mdir).update_job("V0", status=results.RUNNING)
    main([f"wait={mdir}"])
    assert not marker.exists() and unpickled == []
    assert "V0" in capsys.readouterr().out


def test_a_task_that_left_no_log_says_where_to_look(tmp_path, monkeypatch):
    mdir = _slurm_matrix(tmp_path, monkeypatch)
    manifest = results.Manifest.load(mdir)
    status, code, error = poll.outcome(manifest, "V0", "4242_0", "GONE", mdir / results.SUBMITIT)
    assert status == results.FAILED and "without a result" in error and "4242_0_0_log.err" in error


@pytest.mark.parametrize(
    "tail, expected",
    [
        (
            "Traceback (most recent call last):\n  File ...\n    x()\nValueError: bad\n",
            "ValueError: bad",
        ),
        (
            "Traceback (most recent call last):\n  File a\nKeyError: 1\n\nDuring handling ...\n\n"
            "Traceback (most recent call last):\n  File b\nmod.Err: second\nsrun: error: x\n",
            "mod.Err: second",
        ),
        ("submitit INFO (...) - starting\nerror: disk full\n", "error: disk full"),
        ("nothing to see\n", None),
    ],
)
def test_the_task_error_is_the_last_traceback_line(tail, expected):
    assert poll.last_exception(tail) == expected


def test_a_yaml_tag_that_names_python_code_is_refused_not_run(tmp_path, monkeypatch):
    """config.yaml is read with the safe loader by every reader: report, status=, resume=."""
    monkeypatch.setattr(runner, "_launch_and_report", lambda manifest, cfgs, settings: 0)
    assert main([*TINY, "step=V0", f"results_root={tmp_path}", "report=false"]) == 0
    monkeypatch.undo()
    (mdir,) = tmp_path.glob("test_matrix_results_*")
    marker = tmp_path / "yaml-ran"
    (mdir / "V0" / results.CONFIG).write_text(
        f"model: !!python/object/apply:builtins.open [{str(marker)!r}, w]\n"
    )
    from ablate.report import write_report

    with pytest.raises(results.ResultsFormatError):
        results.read_job_config(mdir / "V0" / results.CONFIG)
    try:
        write_report([mdir], out_dir=tmp_path / "out")
    except Exception:
        pass
    main([f"status={mdir}"])
    with pytest.raises(SystemExit):
        main([f"resume={mdir}"])
    assert not marker.exists()


def test_a_checkpoint_whose_pickle_names_code_is_refused_not_run(tmp_path):
    from ablate.errors import AblateError
    from ablate.train.checkpoint import load_checkpoint

    marker = tmp_path / "checkpoint-ran"
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": "x", "payload": _Planted(marker)}, path)
    with pytest.raises(AblateError, match="cannot be read as a checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()


# --------------------------------------------------------------------------- the source scan

_CODE_MODULES = {"pickle", "_pickle", "cloudpickle", "dill", "marshal", "shelve", "joblib"}


def _problems(tree: ast.AST, where: str) -> list[str]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            for name in names:
                if name and name.split(".")[0] in _CODE_MODULES:
                    out.append(f"{where}:{node.lineno}: imports {name}")
        if not isinstance(node, ast.Call):
            continue
        func = ast.unparse(node.func)
        kw = {k.arg: k.value for k in node.keywords}
        if func in ("eval", "exec", "compile", "__import__"):
            out.append(f"{where}:{node.lineno}: calls {func}()")
        if func == "torch.load":
            wo = kw.get("weights_only")
            if not (isinstance(wo, ast.Constant) and wo.value is True):
                out.append(f"{where}:{node.lineno}: torch.load without weights_only=True")
        if func in ("yaml.unsafe_load", "yaml.full_load", "yaml.load_all", "yaml.unsafe_load_all"):
            out.append(f"{where}:{node.lineno}: {func}")
        if func == "yaml.load":
            loader = kw.get("Loader")
            text = ast.unparse(loader) if loader is not None else ""
            if text != "loader":  # results.read_yaml: getattr(yaml, 'CSafeLoader', yaml.SafeLoader)
                if "SafeLoader" not in text:
                    out.append(
                        f"{where}:{node.lineno}: yaml.load with Loader={text or '(default)'}"
                    )
        if func.endswith(("np.load", "numpy.load")):
            ap = kw.get("allow_pickle")
            if ap is not None and not (isinstance(ap, ast.Constant) and ap.value is False):
                out.append(f"{where}:{node.lineno}: numpy load with allow_pickle")
        if func.endswith("read_pickle"):
            out.append(f"{where}:{node.lineno}: {func}")
    return out


def test_no_reader_in_the_source_can_run_code_from_a_file():
    """pickle (and its kin), eval/exec, torch.load without weights_only, unsafe YAML loaders and
    numpy pickles appear nowhere in src/. (Plugins are imported by design, from plugin_path, only
    by a run or resume= of the matrix, never by a reader: report and status= never import them.)"""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        found += _problems(ast.parse(text), str(path.relative_to(SRC)))
        if "Loader=loader" in text:  # a loader named by a variable: it must be a safe one
            assert 'loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)' in text, path
    assert found == []


def test_the_scan_finds_what_it_looks_for():
    bad = (
        "import pickle\nfrom cloudpickle import loads\neval('1')\nexec('x=1')\n"
        "torch.load(p)\ntorch.load(p, weights_only=False)\nyaml.load(t)\nyaml.unsafe_load(t)\n"
        "np.load(p, allow_pickle=True)\npd.read_pickle(p)\n"
    )
    assert len(_problems(ast.parse(bad), "x")) == 10
    good = "torch.load(p, weights_only=True)\nyaml.load(t, Loader=yaml.SafeLoader)\nnp.load(p)\n"
    assert _problems(ast.parse(good), "x") == []


def test_report_and_status_never_import_plugins(tmp_path, monkeypatch):
    """A results folder's config.yaml can name plugins; only running the matrix imports them."""
    from ablate import plugins

    imported = []
    monkeypatch.setattr(plugins, "load_for", lambda cfg: imported.append(cfg) or {})
    monkeypatch.setattr(runner, "_launch_and_report", lambda manifest, cfgs, settings: 0)
    assert main([*TINY, "step=V0", f"results_root={tmp_path}", "report=false"]) == 0
    (mdir,) = tmp_path.glob("test_matrix_results_*")
    imported.clear()
    from ablate.report import write_report

    write_report([mdir], out_dir=tmp_path / "out")
    main([f"status={mdir}"])
    assert imported == []
