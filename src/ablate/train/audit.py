"""The causality audit inside training: the job's own step, on its own batch, checked for leaks.

The probes (models/causality.py) run the model on inputs of their own, before training and on the
trained weights; a model that behaves differently in training (a path switched on after some
steps, or only for the job's batch size, its compiled graph, its real tokens) can pass them. The
audit closes that gap where it can: at iteration 0, at ``budget.causality_audits`` random points
of the budget (seeded by the job's seed) and once in the final eval, the forward the job really
runs is compared with a copy.

- **Training audits.** In the audited iteration's first micro-batch, before the trainer's own
  forward, the same module the step calls (compiled, DDP-wrapped) runs a copy of the micro-batch
  in which every row's tokens after a random cut are replaced (tokens drawn from the batch's own
  tokens, copies of earlier spans, uniform random, EOT: causality_inputs.perturb) and, in a batch
  of two or more, one random row is replaced whole, position 0 included (its cut is recorded as
  -1, its kind ``whole row``: a row reading another row's tokens moves), with the same
  contexts: train mode, gradients recorded, the job's autocast, ``model(x')`` (no targets). Then
  the trainer's step runs as always, and its real logits are the base: at positions <= a row's cut
  the logits, and at positions < the cut the cross-entropy terms, must be those of the copy, each
  element within its own threshold (exact on CPU, ``causality_inputs.margin_for`` on a GPU). The
  loss the step trains on must be the mean of those terms (the trainer computes it: models.loss).
- **No state change.** The copy's forward takes no optimizer step and no backward; the RNG state
  (so the copy draws the dropout masks of the real forward), every module buffer the copy wrote
  (its ``_version`` moved; the eval state check, train.evalstate, sees such a write) and every
  parameter's ``.grad`` are restored before the real forward, so a job trains bit-identically with
  and without audits (tests/train/test_audit.py). DDP: the copy runs under ``no_sync``.
- **The final eval's audit** is the same around the evaluator's own forwards of the final-eval
  batches (eval mode, ``no_grad``, the eval forward: ``Evaluator.final(audit)``): the final
  eval's loss is the number the report compares, and a leak that lowers it must fire in these
  batches. Each rank audits its first batch; its cost sets how many more the budget pays for
  (``FINAL_EVAL_SHARE`` of the job's training time, less what the training audits took, so that
  all audits together stay within it where they can), at least one, drawn by the job's seed
  (``FinalPlan``; not only the first: a module that reads across rows only when a batch
  continues the previous call would pass the first). At the GPT-2 preset's sizes (a 2-hour box,
  64 batches of 8 x 1,024 tokens per rank) that is every batch; at the smoke preset's, a few.
  One verdict covers them all. A failing eval state check is recorded here too
  (``state_changed``, ``check: "eval state"``).
- **Verdict.** Each rank audits its own micro-batch; one all_reduce at the audit gives every rank
  the verdict (no host sync in iterations that are not audited). A leak ends the job ``leaked`` at
  once (no optimizer step on that iteration), summary.json ``causality.audits`` says where.
- **Cost.** One extra forward of one micro-batch per audited batch plus the
  comparison, about a fifth of that forward (an iteration is ``grad_accum`` forwards and
  backwards); timed between device syncs and kept out of the box like an eval. summary.json states
  ``audit_seconds`` and ``audit_share`` (of ``train_seconds``). Measured at the smoke shapes on
  CPU (grad_accum 1): the default audits cost about three iterations, under 1% of a box of 300
  iterations or more.

What it cannot see: a leak active only between audits (a random audit finds a leak that is on for
a share f of training with probability 1 - (1 - f)^k, and the trained-weights recheck sees one that
is still on at the end), a trigger no real batch holds, and a module that tells the extra forward
apart by Python-side state of its own (a call counter kept in an attribute rather than a buffer,
a forward not followed by a backward), and a leak in a final-eval batch it did not take (none
when the budget covers them all).

Why this file is over 400 lines: this docstring is the reference for what the audit sees and
misses, and the code is one flow (plan, copy, compare, verdict, time) over one state; split
apart, each part would reach into the others' fields.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ablate.train import checkpoint as ckpt_mod
from ablate.train import distributed as dist_mod
from ablate.train.device import DeviceSetup
from ablate.train.plain import tail
from ablate.train.state import RunState
from models.causality_inputs import EOT_TOKEN, margin_for, perturb
from models.causality_probes import LOSS_RTOL

FINAL_EVAL_SHARE = 0.01
"""The audits' budget, a share of the job's training time: the final eval audits as many of its
batches as what the training audits left of it pays for (each batch's audit costs about one
eval forward); its first batch and one more at the least."""

WHOLE_ROW = "whole row"
"""The kind of the one row (of a batch of two or more) replaced entirely, position 0 included:
every other row's logits before its cut must not move (a row that reads another row is seen)."""

AUDIT_KINDS = ("data", "span", "random", "eot", "copy")
"""Replacement kinds, one per row in turn: ``data`` (tokens drawn from the batch's own tokens)
first, then copies of the span that followed an earlier occurrence, uniform random, EOT."""


def planned_fractions(count: int, seed: int) -> list[float]:
    """The budget fractions in (0, 1] at which the random audits run, sorted: a function of the
    job's seed only (Python's own generator: torch's RNG stream is not touched)."""
    gen = random.Random(f"causality-audit-{seed}")
    return sorted(1.0 - gen.random() for _ in range(max(0, count)))


class FinalPlan:
    """The final-eval batches one rank audits: the first always (the measured cost of its audit
    sizes the rest), then as many of the others as ``budget_s`` pays for, at least one, drawn by
    the job's seed (Python's own generator: torch's RNG stream is not touched)."""

    def __init__(self, n_batches: int, seed: int, budget_s: float):
        self.n = max(0, n_batches)
        self.seed = seed
        self.budget_s = budget_s
        self.chosen: set[int] = {0} if self.n else set()
        self.sized = self.n <= 1

    def due(self, i: int) -> bool:
        return i in self.chosen

    def first_cost(self, seconds: float) -> None:
        """The first batch's audit took ``seconds``: choose the others."""
        if self.sized:
            return
        self.sized = True
        rest = self.n - 1
        fits = rest if seconds <= 0 else math.floor((self.budget_s - seconds) / seconds + 1e-9)
        more = min(rest, max(1, fits))
        drawn = random.Random(f"final-eval-audit-{self.seed}").sample(range(rest), more)
        self.chosen.update(1 + k for k in drawn)


@dataclass
class _Copy:
    """The perturbed copy of an audited micro-batch and what it gave."""

    cuts: list[int]
    kinds: list[str]
    y: torch.Tensor
    logits: torch.Tensor | None
    error: str | None = None


@dataclass
class _Local:
    """This rank's comparison: the largest change before a cut, and the first leak found."""

    max_change: float = 0.0
    leak: str = ""
    where: dict[str, Any] | None = None
    error: str | None = None
    batches: int = 0
    """Batches compared (the final eval's verdict covers several)."""


class Audit:
    """Plans the audits, runs the copy beside the trainer's forward, compares, agrees on a
    verdict and keeps its record in ``records`` (its own: summary.json's ``causality.audits``)."""

    def __init__(
        self,
        count: int,
        seed: int,
        raw_model: torch.nn.Module,
        dev: DeviceSetup,
        dinfo: dist_mod.DistInfo,
        state: RunState,
        log: Callable[[str], None],
        forward_kind: str = "eager",
        saved: object = None,
    ):
        """``forward_kind``: what the step runs ("eager" or "compiled", and " in DDP");
        ``saved``: a checkpoint's causality entry (its audit records restored)."""
        self.enabled = count > 0
        self.fractions = planned_fractions(count, seed)
        self.seed = seed
        self.raw_model = raw_model
        self.dev = dev
        self.dinfo = dinfo
        self.state = state  # audit_seconds, audit_next, notes
        self.records: list[dict[str, Any]] = []  # summary.json's causality.audits
        if isinstance(saved, dict):
            self.records = list(saved.get("audits") or [])
        self.log = log
        self.margin, self.rule = margin_for(dev.device.type, dev.precision)
        config: Any = raw_model.config  # every registered model has one (models.registry)
        vocab = int(config.vocab_size)
        self.vocab = vocab
        self.eot = EOT_TOKEN if EOT_TOKEN < vocab else vocab - 1
        self.forward_kind = forward_kind
        self.leak: dict[str, Any] | None = None  # the failing record, once one failed
        self._copy: _Copy | None = None
        self._shown: _Copy | None = None  # the compared copy the record shows (a leaking one)
        self._batch = 0  # the index of the batch under way among those one verdict covers
        self._local = _Local()
        self._seconds = 0.0  # of the audit under way
        self._shape: list[int] = []  # this rank's audited micro-batch, [batch, tokens]
        self.excluded = 0.0  # audit seconds the box's clock has not yet left out

    def due(self, it: int, fraction: float) -> bool:
        """Whether iteration ``it`` (about to run, at ``fraction`` of the budget) is audited:
        iteration 0, and the first iteration at or past each planned fraction."""
        if not self.enabled:
            return False
        st, hit = self.state, it == 0
        while st.audit_next < len(self.fractions) and self.fractions[st.audit_next] <= fraction:
            st.audit_next += 1
            hit = hit or it > 0
        return hit

    def final_plan(self, n_batches: int) -> FinalPlan:
        """Which of this rank's ``n_batches`` final-eval batches are audited (``FinalPlan``)."""
        st = self.state
        return FinalPlan(
            n_batches, self.seed, FINAL_EVAL_SHARE * st.train_seconds - st.audit_seconds
        )

    @property
    def seconds(self) -> float:
        """Seconds of the audit under way (its copies and comparisons so far)."""
        return self._seconds

    def state_changed(self, when: str, it: int, message: str) -> str:
        """Record the eval state check's failure (train.evalstate) as a failing record of
        ``causality.audits`` (``check: "eval state"``); returns the job's leak message."""
        record: dict[str, Any] = {
            "ok": False,
            "check": "eval state",
            "when": when,
            "iteration": it,
            "mode": "eval",
            "grad": False,
            "ranks": self.dinfo.world_size,
            "message": f"eval state check ({when}, iteration {it}): {message}",
            "seconds": 0.0,
        }
        self.records.append(record)
        self.leak = record
        self.log(record["message"])
        return str(record["message"])

    # ------------------------------------------------------------------ the copy

    def run_copy(
        self,
        model: torch.nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        it: int,
        context: Callable[[], contextlib.AbstractContextManager[Any]],
        batch: int = 0,
    ) -> None:
        """The copy of micro-batch (x, y) through ``model`` under ``context`` (the step's own
        autocast and grad mode), leaving RNG, buffers and gradients as they were. ``batch``: its
        index among the batches one verdict covers (the final eval's), so each has its own cuts."""
        t0 = self._start()
        self._copy = None
        self._batch = batch
        salt = it + 1_000_003 * batch
        gen = torch.Generator().manual_seed(self.seed * 7919 + salt)
        B, T = x.shape
        self._shape = [B, T]
        cuts = [int(c) for c in torch.randint(0, max(T - 1, 1), (B,), generator=gen)]
        kinds = [AUDIT_KINDS[(b + it + batch) % len(AUDIT_KINDS)] for b in range(B)]
        whole = int(torch.randint(0, B, (1,), generator=gen)) if B > 1 else -1
        if whole >= 0:  # one row replaced entirely, position 0 included: no other row may move
            cuts[whole], kinds[whole] = -1, WHOLE_ROW
        rng = ckpt_mod.capture_rng(self.dev.device)
        # (buffer, its version, a copy): restored only where the copy wrote (an untouched buffer
        # keeps its version, so the eval state check sees only the model's own writes)
        buffers = [
            (b, (b._version, b.data_ptr()), b.detach().clone()) for b in self.raw_model.buffers()
        ]
        grads = [(p, p.grad) for p in self.raw_model.parameters()]
        try:
            stream = torch.cat([x, y[:, -1:]], dim=1)  # x and its next tokens: T + 1 per row
            alt = perturb(
                stream,
                [max(c, 0) for c in cuts],
                [AUDIT_KINDS[0] if k == WHOLE_ROW else k for k in kinds],
                self.vocab,
                self.eot,
                self.seed + salt,
                stream.reshape(-1),
            )
            if whole >= 0:  # every token of the row changed (another token at each position)
                shift = torch.randint(1, self.vocab, (T + 1,), generator=gen).to(alt.device)
                alt[whole] = (stream[whole] + shift) % self.vocab
            at = torch.arange(T, device=x.device)[None, :]
            cut = torch.tensor(cuts, device=x.device)[:, None]
            x_alt = alt[:, :T].contiguous()
            y_alt = torch.where(at >= cut, alt[:, 1:], y)  # targets before each cut kept
            no_sync = getattr(model, "no_sync", None)
            with no_sync() if callable(no_sync) else contextlib.nullcontext(), context():
                out = model(x_alt)  # as the step calls it: targets never reach the model
            logits = out[0] if isinstance(out, (tuple, list)) else out
            self._copy = _Copy(cuts, kinds, y_alt, _detached(logits))
            del out, logits
        except Exception as e:  # a bug in the audit must not fail a measured run
            self._copy = _Copy(cuts, kinds, y, None, f"{type(e).__name__}: {e}")
        finally:
            with torch.no_grad():
                for b, mark, saved in buffers:
                    if (b._version, b.data_ptr()) != mark:
                        b.copy_(saved)
            for p, g in grads:
                p.grad = g
            ckpt_mod.restore_rng(rng, self.dev.device)
            self._stop(t0)

    def compare(self, logits: Any, loss: Any, y: torch.Tensor) -> None:
        """The trainer's own forward (``logits, loss`` of the real micro-batch) against the copy;
        the verdict sees the first leak (or error) of the batches compared since the last one."""
        t0 = self._start()
        try:
            found = self._compare(logits, loss, y)
        except Exception as e:
            found = _Local(error=f"{type(e).__name__}: {e}")
        loc = self._local
        loc.max_change = max(loc.max_change, found.max_change)
        loc.batches += 1
        if not (loc.leak or loc.error) and (found.leak or found.error):
            loc.leak, loc.where, loc.error = found.leak, found.where, found.error
            if loc.where is not None:
                loc.where["batch"] = self._batch
            if loc.leak and self._batch:
                loc.leak = f"in final-eval batch {self._batch}: {loc.leak}"
            self._shown = self._copy  # the record shows the leaking batch's cuts
        if self._shown is None:
            self._shown = self._copy
        self._stop(t0)

    def _compare(self, logits: Any, loss: Any, y: torch.Tensor) -> _Local:
        copy = self._copy
        if copy is None:
            return _Local(error="the copy did not run")
        if copy.error is not None:
            return _Local(error=copy.error)
        base = _detached(logits)
        if base is None or copy.logits is None or base.shape != copy.logits.shape:
            return _Local(error="the forward returned no logits of shape (batch, tokens, vocab)")
        out = _Local()
        changes, firsts, rows = [], [], []
        ce_sum = torch.zeros((), dtype=torch.float64, device=base.device)
        count = 0
        with torch.no_grad():
            for b, t in enumerate(copy.cuts):
                real, alt = base[b].float(), copy.logits[b].float()
                ce_real = F.cross_entropy(real, y[b], ignore_index=-1, reduction="none")
                ce_sum += ce_real.double().sum()
                count += int((y[b] != -1).sum())
                if t < 0:  # the row replaced whole: its own logits may move, nothing to compare
                    continue
                raw, over = _excess(alt[: t + 1], real[: t + 1], self.margin)  # (t + 1,)
                ce_alt = F.cross_entropy(alt[:t], copy.y[b, :t], ignore_index=-1, reduction="none")
                raw_ce, over_ce = _excess(ce_alt[:t, None], ce_real[:t, None], self.margin)
                changes.append(torch.cat([raw, raw_ce]).amax())
                firsts.append(torch.stack([_first_over(over), _first_over(over_ce)]))
                rows.append(b)
            found = torch.stack(firsts).cpu()  # (rows, 2): first leaking position, -1 for none
            out.max_change = float(torch.stack(changes).amax().cpu())
        whole = [b for b, t in enumerate(copy.cuts) if t < 0]
        also = f" and replacing every token of row {whole[0]}" if whole else ""
        for k, b in enumerate(rows):
            t = copy.cuts[b]
            pos, pos_ce = int(found[k, 0]), int(found[k, 1])
            if pos >= 0 or pos_ce >= 0:
                what = "logits" if pos >= 0 else "loss terms"
                p = pos if pos >= 0 else pos_ce
                out.where = {"row": b, "cut": t, "position": p, "compared": what}
                out.leak = (
                    f"replacing the tokens after position {t} of row {b} ({copy.kinds[b]}){also} "
                    f"changed the {what} of row {b} at position {p} (threshold: {self.rule})"
                )
                return out
        if loss is not None and count:
            expected = float(ce_sum.cpu()) / count
            gap = abs(float(torch.as_tensor(loss).detach().float().cpu()) - expected)
            if not gap <= LOSS_RTOL * max(1.0, abs(expected)):
                out.leak = (
                    f"the step's loss differs from the mean cross-entropy of its logits by "
                    f"{gap:.3g}: targets may enter the loss only through the logits"
                )
                out.where = {"row": None, "cut": None, "position": None, "compared": "loss"}
        return out

    # ------------------------------------------------------------------ verdict

    def verdict(self, when: str, it: int, mode: str) -> bool:
        """Every rank: agree on the audit (one all_reduce), record it; False when it leaked."""
        t0 = self._start()
        loc, copy = self._local, self._shown or self._copy
        vec = torch.tensor(
            [
                1.0 if loc.leak else 0.0,
                loc.max_change,
                1.0 if loc.error else 0.0,
            ],
            dtype=torch.float64,
            device=self.dev.device,
        )
        dist_mod.all_reduce(vec, "max", self.dinfo)
        leaked, max_change, failed = vec.tolist()
        record: dict[str, Any] = {
            "ok": False if leaked else (None if failed else True),
            "when": when,
            "iteration": it,
            "mode": mode,
            "grad": mode == "train",
            "forward": self.forward_kind,
            "shape": self._shape,
            "cuts": copy.cuts if copy is not None else [],
            "kinds": copy.kinds if copy is not None else [],
            "ranks": self.dinfo.world_size,
            "batches": loc.batches,
            "max_change": max_change if math.isfinite(max_change) else None,
            "threshold": self.margin,
            "threshold_rule": self.rule,
        }
        if leaked:  # which rank, row, cut and position: gathered only when it leaked
            found = dist_mod.all_gather_object(
                (loc.leak, loc.where) if loc.leak else None, self.dinfo
            )
            rank = next(r for r, f in enumerate(found) if f is not None)
            message, where = found[rank]
            record.update(rank=rank, **(where or {}))
            record["message"] = f"causality audit ({when}, iteration {it}, rank {rank}): {message}"
        elif failed:
            record["message"] = (
                f"causality audit ({when}, iteration {it}) could not run: "
                f"{loc.error or 'it failed on another rank'}"
            )
            self.state.notes.append(tail(record["message"], 500))
        else:
            record["message"] = (
                f"causality audit ({when}, iteration {it}): no change before the cuts "
                f"(max {max_change:.3g}; {self.rule})"
            )
        self._stop(t0)
        record["seconds"] = round(self._seconds, 4)
        self._seconds = 0.0
        self._copy, self._shown, self._shape, self._local = None, None, [], _Local()
        self.records.append(record)
        self.log(f"{record['message']} [{record['seconds']:.2f}s, not counted in the box]")
        if leaked:
            self.leak = record
        return not leaked

    # ------------------------------------------------------------------ time

    def _start(self) -> float:
        self.dev.synchronize()  # queued training work belongs to training, not to the audit
        return time.perf_counter()

    def _stop(self, t0: float) -> float:
        self.dev.synchronize()
        dt = time.perf_counter() - t0
        self._seconds += dt
        self.state.audit_seconds += dt
        self.excluded += dt
        return dt

    def take_excluded(self) -> float:
        """Seconds of auditing since the last call: the box's clock leaves them out."""
        dt, self.excluded = self.excluded, 0.0
        return dt


def _detached(logits: Any) -> torch.Tensor | None:
    if isinstance(logits, torch.Tensor) and logits.dim() == 3:
        return logits.detach()
    return None


def _excess(
    alt: torch.Tensor, real: torch.Tensor, margin: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per position: the largest |change| and the largest excess over each element's own
    threshold, margin x max(|value|, 1) (> 0 is a leak; NaN counts as infinite)."""
    change = (alt - real).abs()
    raw = torch.nan_to_num(change.amax(dim=-1), nan=math.inf) if change.numel() else change.sum(-1)
    if margin <= 0 or not change.numel():
        return raw, raw
    over = change - real.abs().clamp(min=1.0) * margin
    return raw, torch.nan_to_num(over.amax(dim=-1), nan=math.inf)


def _first_over(over: torch.Tensor) -> torch.Tensor:
    """The first position whose excess is > 0, or -1 (a 0-d tensor, on the device)."""
    if not over.numel():
        return torch.tensor(-1, device=over.device)
    hit = over > 0
    idx = torch.arange(over.numel(), device=over.device)
    return (
        torch.where(hit, idx, over.numel())
        .amin()
        .where(hit.any(), torch.tensor(-1, device=over.device))
    )
