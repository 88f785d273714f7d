"""A researcher's attention or MLP that does not fit the model, and a registry name nobody
registers: each is one line saying what is wrong, never a traceback from deep in a forward pass.

- a class registered with ``register_attention`` / ``register_mlp`` (or put in a table by hand)
  whose constructor or forward cannot be called as a block calls it is refused, naming the class,
  its file and the contract's signature;
- an exception the model code raises while the preflight builds or probes a model is one line
  naming the step, the exception and the file:line in the model's module, exit code 2;
- an unknown attention / MLP / arch name is refused before the preflight (no torch import), with
  the hint to list the module that registers it in ``plugins=[...]``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from helpers.errors import assert_one_error_line
from helpers.tiny import TINY_BATCH, TINY_MODEL

import models
from ablate.matrix.__main__ import main
from models import ModelConfigError, register_attention, register_mlp

REPO = Path(__file__).resolve().parents[2]
SHAPE = {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 8, "vocab_size": 32}


def _module(folder: Path, body: str) -> str:
    """``body`` as a fresh module in ``folder`` (a new name: modules live on in this process)."""
    name = f"my_component_{uuid.uuid4().hex[:8]}"
    (folder / f"{name}.py").write_text(textwrap.dedent(body))
    return name


def _step_file(folder: Path, step: str, key: str, value: str) -> Path:
    conf = folder / "conf"
    (conf / "step").mkdir(parents=True, exist_ok=True)
    (conf / "step" / f"{step}.yaml").write_text(
        f"# @package _global_\nstep:\n  name: {step}\n  architecture: mine\nmodel:\n  {key}: {value}\n"
    )
    return conf


# ---------------------------------------------------------------- (a) the contract, when registered


def test_an_mlp_whose_forward_lacks_the_attention_output_is_refused_when_registered():
    from torch import nn

    class GLUMLP(nn.Module):
        def __init__(self, config, layer_idx):
            super().__init__()

        def forward(self, x):
            return x

    with pytest.raises(ModelConfigError) as e:
        register_mlp(f"glu_{uuid.uuid4().hex[:6]}")(GLUMLP)
    text = str(e.value)
    assert "GLUMLP.forward(self, x)" in text and f"{__file__}:" in text, text
    assert "write forward(self, x, attn_out)" in text and "attention output" in text, text
    assert "\n" not in text


@pytest.mark.parametrize(
    "init, forward, expected",
    [
        ("self, config", "self, x", "__init__(self, config, layer_idx)"),
        ("self, config, layer_idx", "self, x, mask", "forward(self, x)"),
        ("self, config, layer_idx", "self", "forward(self, x)"),
    ],
)
def test_an_attention_that_cannot_be_called_as_a_block_calls_it_is_refused(init, forward, expected):
    from torch import nn

    namespace: dict = {"nn": nn}
    exec(
        f"class MyAttention(nn.Module):\n"
        f"    def __init__({init}):\n        super().__init__()\n"
        f"    def forward({forward}):\n        return None\n",
        namespace,
    )
    with pytest.raises(ModelConfigError) as e:
        register_attention(f"mine_{uuid.uuid4().hex[:6]}")(namespace["MyAttention"])
    assert "MyAttention." in str(e.value) and f"write {expected}" in str(e.value), str(e.value)


def test_contract_keeping_components_register_and_every_built_in_keeps_it():
    from torch import nn

    class Loose(nn.Module):  # extra arguments with defaults, *args: callable as the block calls it
        def __init__(self, config, layer_idx=0, hidden=None):
            super().__init__()

        def forward(self, x, *rest):
            return x

    register_attention(f"loose_{uuid.uuid4().hex[:6]}")(Loose)
    register_mlp(f"loose_{uuid.uuid4().hex[:6]}")(Loose)
    for name, cls in models.ATTENTION.items():
        models.registry.check_component("attention", name, cls)
    for name, cls in models.MLPS.items():
        models.registry.check_component("mlp", name, cls)


def test_a_class_put_in_a_table_by_hand_is_refused_when_the_model_is_built():
    from torch import nn

    class Bare(nn.Module):
        def __init__(self, config, layer_idx):
            super().__init__()

        def forward(self, x):
            return x

    models.MLPS["bare_by_hand"] = Bare  # the conftest restores the table
    with pytest.raises(
        ModelConfigError, match=r"Bare\.forward\(self, x\) .* forward\(self, x, attn_out\)"
    ):
        models.build_model({**SHAPE, "mlp": "bare_by_hand"})


GLU_FORWARD_X = """\
    from torch import nn
    from models import register_mlp

    @register_mlp("{name}")
    class GLUMLP(nn.Module):
        def __init__(self, config, layer_idx):
            super().__init__()
            self.fc = nn.Linear(config.n_embd, config.n_embd)

        def forward(self, x):
            return self.fc(x)
    """


def test_the_new_users_glu_plugin_is_one_line_naming_class_file_and_contract(
    tmp_path, monkeypatch, capsys
):
    # The user's report: 56 lines of traceback ending in gpt2.py's `self.mlp(self.ln_2(x), a)`, rc 1.
    name = f"glu_{uuid.uuid4().hex[:6]}"
    module = _module(tmp_path, GLU_FORWARD_X.format(name=name))
    conf = _step_file(tmp_path, "V30", "mlp", name)
    monkeypatch.chdir(tmp_path)
    argv = ["--config-dir", str(conf), f"plugins=[{module}]", "experiment=smoke", "step=V30"]
    with pytest.raises(SystemExit) as e:
        main([*argv, *TINY_MODEL, *TINY_BATCH, "--plan"])
    out, err = capsys.readouterr()
    assert e.value.code == 2, err
    assert_one_error_line(
        err,
        f"plugin module {module!r}",
        "GLUMLP.forward(self, x)",
        f"{tmp_path / module}.py:",
        "forward(self, x, attn_out)",
    )
    assert "preflight" not in out  # refused while the plugins load, before the plan and preflight


# ---------------------------------------------------------------- (b) model code that raises


BROKEN = {
    "build": (
        """\
        from torch import nn
        from models import register_mlp

        @register_mlp("{name}")
        class Broken(nn.Module):
            def __init__(self, config, layer_idx):
                super().__init__()
                raise ValueError("hidden size must be even")

            def forward(self, x, attn_out):
                return x
        """,
        "building the model raised ValueError: hidden size must be even",
        8,
        "__init__",
    ),
    "forward": (
        """\
        from torch import nn
        from models import register_mlp

        @register_mlp("{name}")
        class Broken(nn.Module):
            def __init__(self, config, layer_idx):
                super().__init__()
                self.fc = nn.Linear(config.n_embd, config.n_embd + 1)

            def forward(self, x, attn_out):
                return self.fc(x) + attn_out
        """,
        "the causality check's forward and backward passes through the model raised RuntimeError: "
        "The size of tensor a",
        11,
        "forward",
    ),
}


@pytest.mark.parametrize("where", sorted(BROKEN))
def test_model_code_that_raises_in_the_preflight_is_one_line_with_its_file_and_line(
    where, tmp_path, monkeypatch, capsys
):
    body, says, line, function = BROKEN[where]
    name = f"broken_{uuid.uuid4().hex[:6]}"
    module = _module(tmp_path, body.format(name=name))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(
            [
                f"plugins=[{module}]",
                "experiment=smoke",
                f"model.mlp={name}",
                *TINY_MODEL,
                *TINY_BATCH,
                f"results_root={tmp_path / 'results'}",
                "causality_cache.enabled=false",
            ]
        )
    err = capsys.readouterr().err
    assert e.value.code == 2, err  # a user error, not "a job failed"
    assert_one_error_line(
        err, "preflight failed for V0: ", says, f"(at {tmp_path / module}.py:{line} in {function})"
    )
    assert not (tmp_path / "results").exists() or not list((tmp_path / "results").iterdir())


def test_an_exception_of_the_probing_code_itself_is_not_passed_off_as_the_models(monkeypatch):
    # A bug of ablate's (no frame of model code in its traceback) keeps its traceback: here a
    # wrong call of the probes, raised in model_check.py's own frame.
    import functools

    from ablate.matrix import model_check

    real = models.check_causal
    monkeypatch.setattr(models, "check_causal", functools.partial(real, no_such_argument=1))
    with pytest.raises(TypeError, match="no_such_argument"):
        model_check.check_model({**SHAPE}, probe=model_check.probe_arguments(0, 1, ["fp32"]))


# ---------------------------------------------------------------- an unknown registry name


def _run_in_subprocess(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """main(argv) in a fresh process; prints whether torch was imported by the time it ended."""
    code = (
        "import sys\nfrom ablate.matrix.__main__ import main\n"
        f"try:\n    main({argv!r})\n"
        "except SystemExit as e:\n    print('rc', e.code, 'torch' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("cfg", [[], ["--plan"], ["--cfg", "job"]], ids=["run", "plan", "cfg"])
def test_an_unknown_attention_is_refused_before_the_preflight_without_importing_torch(
    cfg, tmp_path
):
    proc = _run_in_subprocess(["experiment=smoke", "model.attention=rra", *cfg], tmp_path)
    assert proc.stdout == "rc 2 False\n", proc.stdout + proc.stderr  # no preflight line, no torch
    assert_one_error_line(
        proc.stderr,
        "model.attention='rra' is unknown (allowed: causal, ra); did you mean 'ra'?",
        "list the module that defines it (@register_attention('rra')) in plugins=[...] "
        "(none is listed) and its folder in plugin_path=[...]",
    )


def test_an_unknown_mlp_with_plugins_listed_says_they_do_not_register_it(tmp_path, capsys):
    module = _module(tmp_path, "X = 1\n")
    with pytest.raises(SystemExit) as e:
        main(
            [
                f"plugins=[{module}]",
                f"plugin_path=[{tmp_path}]",
                "experiment=smoke",
                "model.mlp=glu",
                "--plan",
            ]
        )
    out, err = capsys.readouterr()
    assert e.value.code == 2 and out == "", out
    assert_one_error_line(
        err,
        "model.mlp='glu' is unknown (allowed: rmlp, standard);",
        f"plugins=[{module}] do not register it;",
        "(@register_mlp('glu')) in plugins=[...]",
    )


def test_the_built_in_names_known_without_torch_are_those_the_components_register():
    from models import registry

    models.load_components()
    ours = {
        key: sorted(n for n, v in table.items() if v.__module__.startswith("models."))
        for key, table in (
            ("arch", registry.REGISTRY),
            ("attention", registry.ATTENTION),
            ("mlp", registry.MLPS),
        )
    }
    assert ours == {key: sorted(names) for key, names in registry.BUILT_IN.items()}
