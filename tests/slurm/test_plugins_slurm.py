"""A researcher's own attention module, outside the repository, in Slurm jobs."""

from __future__ import annotations

import textwrap
import uuid

import pytest
from helpers.tiny import TINY_BATCH, TINY_MODEL

from ablate import results
from ablate.matrix.__main__ import main

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

TINY = [
    *TINY_MODEL,
    *TINY_BATCH,
    "data.val_windows=4",
    "data.val_tokens=1024",  # a small validation split: the final eval reads all of it
    "budget.eval_interval=3",
    "budget.log_interval=3",
    "hardware.threads=1",
]


def test_slurm_jobs_import_the_users_plugin_from_plugin_path(
    slurm_cluster, tmp_path, monkeypatch, capsys
):
    tag = uuid.uuid4().hex[:8]
    module, attn = f"slurm_attention_{tag}", f"slurm_ra_{tag}"
    user = tmp_path / "myidea"
    (user / "conf" / "step").mkdir(parents=True)
    (user / f"{module}.py").write_text(
        textwrap.dedent(f"""\
        from torch import nn
        from torch.nn import functional as F
        from models import register_attention

        @register_attention("{attn}")
        class A(nn.Module):
            def __init__(self, config, layer_idx):
                super().__init__()
                self.h = config.n_head
                self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)
                self.proj = nn.Linear(config.n_embd, config.n_embd)

            def forward(self, x):
                B, T, C = x.shape
                q, k, v = (t.view(B, T, self.h, C // self.h).transpose(1, 2) for t in self.qkv(x).split(C, 2))
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                return self.proj(y.transpose(1, 2).reshape(B, T, C))
        """)
    )
    (user / "conf" / "step" / "V19.yaml").write_text(
        f"# @package _global_\nstep:\n  name: V19\n  architecture: mine\nmodel:\n  attention: {attn}\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    rc = main(
        [
            "--config-dir",
            str(user / "conf"),
            f"plugins=[{module}]",
            f"plugin_path=[{user}]",
            "experiment=smoke",
            "step=V19",
            "budget.max_iters=6",
            "launcher=slurm",
            f"launcher.slurm.partition={slurm_cluster.partition}",
            f"results_root={tmp_path / 'r'}",
            *TINY,
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out[-4000:]
    mdir = next((tmp_path / "r").glob("test_matrix_results_*"))
    env = results.read_json(mdir / "V19" / "env.json")
    assert env["plugins"][module]["file"] == str(user / f"{module}.py")
    assert results.JobDir(mdir / "V19").read_summary()["status"] == "completed"
