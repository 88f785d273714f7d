"""Targets never reach a model: every forward the job makes is ``model(x)`` and the trainer
computes the loss itself (models.loss), so a model that reads its targets cannot lower its loss."""

from __future__ import annotations

from helpers.leak_zoo import LastTargetBonusGPT, RecordingGPT, TargetsLeakGPT
from helpers.train_helpers import make_job, summary, train_records, val_curve

import models
from ablate.train import run_job


def _train(tmp_path, monkeypatch, name: str, cls) -> dict:
    monkeypatch.setitem(models.REGISTRY, name, cls)
    monkeypatch.setattr(cls, "calls", [], raising=False)
    job = make_job(tmp_path, name, model__arch=name, budget__max_iters=6, budget__eval_interval=3)
    res = run_job(job)
    assert res["status"] == "completed", res
    return {"summary": summary(job), "val": val_curve(job), "train": train_records(job)}


def test_a_model_that_reads_its_targets_is_never_given_them_and_gains_nothing(
    tmp_path, monkeypatch
):
    honest = _train(tmp_path, monkeypatch, "zoo_recording", RecordingGPT)
    bonus = _train(tmp_path, monkeypatch, "zoo_last_target", LastTargetBonusGPT)
    # every forward of the job (steps, evals, audits, the recheck) was model(x)
    for cls in (RecordingGPT, LastTargetBonusGPT):
        assert len(cls.calls) > 20, len(cls.calls)
        assert all(t is None for t in cls.calls), sum(t is not None for t in cls.calls)
    # nothing to read: the same run as the honest model (same seed), bit for bit; with targets
    # given, the bonus lowered every val loss and passed every check
    assert len(honest["val"]) >= 2
    assert bonus["val"] == honest["val"]
    # zoo_targets adds the target's embedding to the stream whenever it is given targets (the old
    # audit refused it: 'leaked'); now it trains as the plain GPT
    embedding = _train(tmp_path, monkeypatch, "zoo_targets", TargetsLeakGPT)
    for reader in (bonus, embedding):
        assert reader["summary"]["final_val_loss"] == honest["summary"]["final_val_loss"]
        assert reader["val"] == honest["val"]
        assert [r["loss/train"] for r in reader["train"]] == [
            r["loss/train"] for r in honest["train"]
        ]
