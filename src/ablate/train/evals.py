"""Evaluations: the periodic one on the fixed validation windows, the final one on the full set.

Both run on every rank (each scores its share of the windows; the results are reduced); rank 0
writes the eval row of metrics.jsonl, final_eval.json and summary.json. Their time goes to
``RunState.eval_seconds``, never to the box.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import torch

import models
from ablate import results
from ablate.errors import AblateError
from ablate.train import distributed as dist_mod
from ablate.train import records

if TYPE_CHECKING:  # the trainer passes itself; no import at run time (it imports this module)
    from ablate.train.trainer import Trainer


@torch.no_grad()
def window_losses(tr: Trainer, batches) -> torch.Tensor:
    """Mean cross-entropy of each of this rank's windows (float64, on the device)."""
    dev = tr.dev
    model = tr.fwd_model
    model.eval()
    out = []
    for x, y in batches:
        x = x.to(dev.device, non_blocking=True)
        y = y.to(dev.device, non_blocking=True)
        with dev.autocast():
            logits, _ = model(x, y)  # the signature the compile probe compiled for evals
        ce = torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), reduction="none"
        )
        out.append(ce.view(x.size(0), -1).double().mean(1))
    model.train()
    return torch.cat(out) if out else torch.zeros(0, device=dev.device, dtype=torch.float64)


def gate_shares(tr: Trainer) -> dict:
    """Reciprocal paths' share of their block output (models/gate_shares.py), on rank 0's
    first periodic validation windows: fixed inputs, so runs and steps compare."""
    x, _ = tr.val_batches[0]
    with tr.dev.autocast():
        return records.plain(models.gate_shares(tr.raw_model, x.to(tr.dev.device)))


def evaluate(tr: Trainer) -> float:
    """Mean validation loss over the periodic windows (all ranks)."""
    dev = tr.dev
    losses = window_losses(tr, tr.val_batches)
    vec = torch.stack(
        [losses.sum(), torch.tensor(float(losses.numel()), device=dev.device, dtype=torch.float64)]
    )
    dist_mod.all_reduce(vec, "sum", tr.dinfo)
    total_all, count_all = vec.tolist()
    if count_all <= 0:
        raise AblateError(
            "no validation windows: raise data.val_windows or check the validation split"
        )
    return total_all / count_all


def evaluate_final(tr: Trainer) -> list[float]:
    """Every final-eval window's loss, in window order (on every rank)."""
    local = window_losses(tr, tr.final_windows.batches(tr.cfg.hardware.micro_batch))
    parts = dist_mod.all_gather_object(
        local.cpu().tolist(), tr.dinfo
    )  # ranks hold consecutive windows
    return [v for part in parts for v in part]


def eval_and_record(tr: Trainer, final: bool = False) -> None:
    st = tr.state
    t0 = time.perf_counter()
    full: list[float] | None = None
    if final:
        full = evaluate_final(tr)
        k = tr.cfg.data.val_windows
        val = sum(full[:k]) / k  # the periodic windows are the first k: one curve, same windows
        full_loss = sum(full) / len(full)
        st.final_val_loss = full_loss
    else:
        val = evaluate(tr)
    tr.last_eval_iter = st.iter
    if math.isfinite(val) and (st.best_val_loss is None or val < st.best_val_loss):
        st.best_val_loss = val
        st.best_val_iter = st.iter
    st.gates = records.plain(tr.raw_model.gate_stats()) if tr.is_main else {}
    if final and tr.is_main and tr.val_batches:
        tr.gate_shares = gate_shares(tr)
    if tr.is_main:
        tokens = st.iter * tr.cfg.optim.tokens_per_iter
        rec = {
            "kind": "eval",
            "iter": st.iter,
            "tokens_seen": tokens,
            "train_seconds": st.train_seconds,
            "flops": tr.flops_per_token * tokens if tr.flops_per_token is not None else None,
            "loss/val": val,
            "loss/val_best": st.best_val_loss,
        }
        if st.iter > 0:  # the global batch of the last iteration trained
            rec["batch_iter"] = st.iter - 1
            rec["batch_fingerprint"] = tr.batches.global_fingerprint(st.iter - 1)
        if full is not None:
            rec["loss/val_full"] = full_loss
            rec["val_full_windows"] = len(full)
            results.write_final_eval(
                tr.jd.final_eval,
                loss=full_loss,
                window_losses=full,
                block_size=tr.cfg.model.block_size,
                fingerprint=tr.val_fingerprint,
                iteration=st.iter,
                tokens_seen=tokens,
                train_seconds=st.train_seconds,
                periodic_windows=tr.cfg.data.val_windows,
                val_path=tr.final_windows.path,
            )
        for key, per_layer in st.gates.items():
            for layer, value in enumerate(per_layer):
                rec[f"gates/{layer}/{key}"] = value
        tr.metrics.write(rec)
        tr.write_summary(results.RUNNING)
    dt = time.perf_counter() - t0
    st.eval_seconds += dt
    if final:
        tr.final_eval_seconds = dt
        tr.log(
            f"final eval on {len(full)} windows ({tr.final_windows.tokens_per_eval:,} tokens): "
            f"val loss {full_loss:.4f} ({dt:.1f}s)"
        )
    tr.log(
        f"eval iter {st.iter}: val loss {val:.4f} (best {st.best_val_loss:.4f} at {st.best_val_iter})"
        if st.best_val_loss is not None
        else f"eval iter {st.iter}: val loss {val}"
    )
