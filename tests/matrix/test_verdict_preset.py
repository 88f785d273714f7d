"""The presets that give a verdict: cpu1h and gpu1h compose, are not pipeline checks, and cpu1h
tells a step that truly differs (a crippled copy of the baseline) from the baseline.

The real cpu1h budget (12 jobs of 210 s) is an hour; the end-to-end test keeps the preset's model,
data, optimizer and hardware but trains 60 iterations (an iteration budget, so that a loaded
machine does equal work), and runs two steps with three seeds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ablate import results
from ablate.compose import build_jobs
from ablate.matrix.__main__ import main
from ablate.report.__main__ import main as report_main
from ablate.report.warnings import is_pipeline_check

CRIPPLED_STEP = """# @package _global_
step:
  name: Vdrowned
  architecture: V0 with drowned attention
  description: Attention replaced by large fresh noise that drowns each token's identity.
model:
  attention: drowned
"""

# A step that truly is worse, through the documented plugin path: its attention ignores its input
# and adds fresh noise, 150 times the embeddings' scale, to the residual stream in every forward, so
# the token's identity is buried in noise the model cannot learn to cancel. (A fixed vector in its
# place is not enough: the LayerNorms let the model read the token past a constant.) The noise is
# drawn from torch's RNG, which the causality probes and audits seed alike for their compared runs.
CRIPPLED_MODULE = """from torch import nn

from models import register_attention


@register_attention("drowned")
class Drowned(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()

    def forward(self, x):
        return 3.0 * x.new_empty(x.shape).normal_()
"""


@pytest.mark.parametrize("preset", ["cpu1h", "gpu1h"])
def test_the_verdict_presets_compose_and_are_not_pipeline_checks(preset, tmp_path):
    jobs = build_jobs(
        [f"experiment={preset}", "step=V0,V16,V17,V18", "seed=1,2,3", f"results_root={tmp_path}"],
        True,
    )
    assert len(jobs) == 12 and {j.cfg.experiment for j in jobs} == {preset}
    assert not is_pipeline_check([preset])
    b = jobs[0].cfg.budget
    box = b.box_seconds
    assert box is not None and 12 * box <= 3600 * 0.75  # boxes leave a quarter hour for the rest
    if preset == "gpu1h":
        assert jobs[0].cfg.model.n_layer == 12 and jobs[0].cfg.hardware.device.value == "cuda"
        assert jobs[0].cfg.data.source == "finewebedu"


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 6 jobs: about 7 minutes on an idle 2-core machine, more under load
def test_cpu1h_calls_a_crippled_step_worse(tmp_path, capsys):
    steps = tmp_path / "conf" / "step"
    steps.mkdir(parents=True)
    (steps / "Vdrowned.yaml").write_text(CRIPPLED_STEP)
    (tmp_path / "crippled_attention.py").write_text(CRIPPLED_MODULE)
    rc = main(
        [
            "--config-dir",
            str(tmp_path / "conf"),
            "plugins=[crippled_attention]",
            f"plugin_path=[{tmp_path}]",
            "experiment=cpu1h",
            "step=V0,Vdrowned",
            "seed=1,2,3",  # as the preset is run: with 2 the seed noise has 1 df and reads wide
            # 36 iterations in a box that never ends first: equal work whatever the load (a
            # loaded machine in a short box trains a few iterations and evaluates once).
            "budget.box_seconds=900",
            "budget.max_iters=36",
            "optim.warmup_iters=4",
            "budget.eval_interval=12",
            f"results_root={tmp_path / 'results'}",
            "progress=false",
            "--multirun",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out[-3000:]
    mdir = next((tmp_path / "results").glob(f"{results.MATRIX_PREFIX}*"))
    report_main([str(mdir), "--format", "json"])
    rows = json.loads(capsys.readouterr().out)
    crippled = next(r for r in rows if r["step"] == "Vdrowned")
    assert crippled["verdict"] == "worse", json.dumps(crippled, indent=1)
    report = (mdir / results.REPORT).read_text()
    assert not report.startswith("# Pipeline check")
    config = yaml.safe_load(Path(mdir / "V0_seed1" / results.CONFIG).read_text())
    assert config["experiment"] == "cpu1h"


def test_gpu1h_proposes_the_data_command_its_comment_gives():
    """gpu1h's data is the first 200M tokens of FineWebEdu: the "not prepared" fix a user is given
    is that command, not one that streams the whole 10B sample."""
    from ablate.data.dataset import prepare_command

    jobs = build_jobs(["experiment=gpu1h", "step=V0"], True)
    command = prepare_command(jobs[0].cfg.data)
    assert command == "python -m ablate.data data=finewebedu data.total_tokens=200000000"
    text = (Path(__file__).resolve().parents[2] / "conf/experiment/gpu1h.yaml").read_text()
    assert "python -m ablate.data data=finewebedu data.total_tokens=200M" in text
    assert 200_000_000 == jobs[0].cfg.data.total_tokens
