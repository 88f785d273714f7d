"""The Trainer: one job's setup and its training loop (every rank runs it; rank 0 writes files).

1. ``config.yaml`` -> device, precision, process group; global batch -> gradient accumulation.
2. ``seed_all(seed)`` then ``build_model`` (identical init on every rank); AdamW groups from
   ``model.param_kind``; then each rank reseeds its dropout RNG with ``seed + rank offset``.
3. ``checkpoint.pt`` present -> restore model, optimizer, ``RunState`` and every rank's RNG state;
   metrics past the checkpoint's iteration are truncated and re-logged as training redoes them.
4. The loop (``train``): a step on ``TrainBatches.get(i)`` (a pure function of seed and i); at a
   sync point the ``BoxClock`` measures and plans (module ``clock``); then eval, checkpoint and log
   by the ``Cadence``. Evals every ``budget.eval_interval`` iterations and at the end (the final
   one on the full validation set); checkpoints every ``checkpoint_interval_iters`` /
   ``checkpoint_interval_seconds`` and on SIGTERM/SIGUSR1/SIGUSR2; ``summary.json`` rewritten
   atomically after every eval and at the end; DONE written last.

Exactness of resume: in iteration mode (``budget.max_iters``) the schedule depends on the
iteration only, so an interrupted-and-resumed CPU run reproduces the uninterrupted loss curve
exactly. In time-box mode the learning rate is a function of the fraction of the box elapsed
(training time, which differs in every run); resume continues the box from the checkpoint's
elapsed seconds but is not bit-exact.

How it is split: ``Trainer.__init__`` builds every part before the loop, and each part receives
what it needs, never the trainer (tests/test_imports.py checks): the data and the forward models
(``setup``), the ``Evaluator`` that computes losses (``evals``), the ``Recorder`` that writes
metrics rows, final_eval.json and summary.json from the ``RunState`` and the ``RunFacts`` of
setup (``records``; env.json and train.log's lines in ``header`` and ``trainlog``), the
``Recheck`` of the trained weights (``causality``), the ``Cadence`` that says what is due, and
the ``BoxClock`` that measures the ``Box`` (``clock``, ``box``), and the causality ``Audit`` of
chosen training steps and of the final eval (``audit``: the step hands it its own forward).

Why this file is over 400 lines: what stays here is what changes the model, the optimizer or
the order of the steps, and it reads in that order: the build, the loop (``train``, one screen),
the step, checkpoint save and restore, and the steps after training (each ordered so that a kill
at any point restarts into the same end state), then ``run``, which records a failure.
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

import models
from ablate import plugins as plugins_mod
from ablate import results
from ablate.atomic import is_disk_full
from ablate.config import Keep, load_job_config, to_container
from ablate.errors import AblateError, ConfigError, DiskFullError
from ablate.outcome import EXIT_COMPLETED, EXIT_FAILED, EXIT_PREEMPTED, EXIT_USER_ERROR
from ablate.results import JobDir, MetricsWriter
from ablate.results import stage as stages
from ablate.train import checkpoint as ckpt_mod
from ablate.train import distributed as dist_mod
from ablate.train import header, run_identity, trackers
from ablate.train.audit import Audit
from ablate.train.box import Box
from ablate.train.cadence import Cadence
from ablate.train.causality import Recheck
from ablate.train.clock import BoxClock, Sync
from ablate.train.compile import CompileResult
from ablate.train.device import probe_sdpa, setup_device
from ablate.train.evals import Evaluator, FinalEval, gate_shares, gate_stats
from ablate.train.optim import Schedule, build_optimizer, grad_accum_for, keep_implementation
from ablate.train.plain import tail
from ablate.train.records import Recorder, RunFacts
from ablate.train.setup import build_forward, load_data
from ablate.train.signals import StopSignals, signal_name
from ablate.train.state import RunState
from ablate.train.trainlog import budget_warnings, final_lines
from models.loss import forward_logits, lm_loss

RANK_SEED_OFFSET = 1_000_003  # dropout RNG of rank r: seed + r * offset (after model init)


@dataclass(frozen=True)
class End:
    """Why the loop ended. ``budget``: the budget is spent (or was, at a restart), the steps after
    training follow; ``leaked``: the resume recheck failed, or an audit in training or the
    state check of a periodic eval (then ``result`` is the summary already written);
    ``stopped``: failed or preempted, ``result`` is the summary already written."""

    why: Literal["budget", "leaked", "stopped"]
    result: results.JobSummary | None = None


class Trainer:
    def __init__(
        self, jd: JobDir, dinfo: dist_mod.DistInfo, state: RunState, rec: Recorder
    ) -> None:
        """Setup: every part of the run, built before the loop. A failure here is recorded by
        ``run`` through ``rec`` with the facts known by then."""
        self.jd = jd
        self.dinfo = dinfo
        self.is_main = dinfo.is_main
        self.state = state  # the counters; restored from a checkpoint
        self.rec = rec
        facts = self.facts = rec.facts
        cfg = self.cfg = facts.cfg = load_job_config(jd.config)
        init: dict[str, Any] | None = None  # the preflight's causality record
        try:
            init = results.read_causality_init(jd)
        except AblateError as e:  # an unreadable preflight record: the job is reported unchecked
            state.notes.append(
                f"preflight causality record unreadable ({e}); reported as unchecked"
            )
        rec.open_causality(lambda: results.causality_entry(init))
        # every value was validated by load_job_config (ablate.config.validate_run)
        box = facts.box = Box(cfg.budget.box_seconds, cfg.budget.max_iters)
        self.schedule = facts.schedule = Schedule(cfg.optim, box)
        self.clip = cfg.optim.grad_clip

        dev = self.dev = facts.device = setup_device(cfg.hardware, dinfo.local_rank)
        # Under the local launcher our stdout already goes to train.log: do not write it twice.
        rec.open_log(os.environ.get(results.LOG_CAPTURED_ENV) == "1")
        dist_mod.init(dinfo, dev.device)
        facts.rank_hosts = dist_mod.rank_hosts(dinfo)  # env.json; names a lost rank's host
        self.grad_accum = facts.grad_accum = grad_accum_for(
            cfg.optim.tokens_per_iter,
            cfg.model.block_size,
            cfg.hardware.micro_batch,
            dinfo.world_size,
        )
        data = load_data(cfg, dinfo, dev, self.grad_accum)
        facts.dataset, facts.final_windows = data.dataset, data.final_windows
        facts.val_fingerprint = data.final_windows.fingerprint() if self.is_main else None
        self.batches = data.batches

        # Model: identical init on every rank; the researcher's own modules first (same as preflight).
        facts.plugins = plugins_mod.load_for(cfg)
        ckpt_mod.seed_all(cfg.seed)
        try:
            model = models.build_model(cfg.model)
        except models.ModelConfigError as e:
            raise ConfigError(str(e)) from None
        model.to(dev.device)
        self.raw_model = model
        dev.sdpa = probe_sdpa(dev, cfg.model.n_head, cfg.model.n_embd // cfg.model.n_head)
        facts.num_params = int(model.num_params())  # type: ignore[operator]
        facts.flops_per_token = float(model.flops_per_token())  # type: ignore[operator]
        self.optimizer, facts.optim_record = build_optimizer(model, cfg.optim, dev.device.type)
        self.trainable = [p for g in self.optimizer.param_groups for p in g["params"]]

        # Resume, or seed this rank's dropout RNG.
        ck = ckpt_mod.load_checkpoint(jd.checkpoint)
        self.resumed_this_start = ck is not None
        saved: Any = None  # the checkpoint's causality records, for the parts built below
        if ck is not None:
            saved = self._restore(ck, init)
        else:
            ckpt_mod.seed_all(cfg.seed + dinfo.rank * RANK_SEED_OFFSET)
        # What the final eval scores: noted once it ran (_complete), never for a run stopped before.
        self.val_note = data.val_note
        # torch.compile (its time is warm-up, not training) and the DDP wrapper.
        fwd = build_forward(model, dev, dinfo, self.batches, state.iter, data.val_batches)
        facts.compiled = fwd.compiled or CompileResult(cfg.hardware.compile, compiled=False)
        if fwd.compiled is not None:
            state.warmup_seconds += fwd.compile_seconds
            dev.compile = fwd.compiled.compiled  # from here on: what really runs
            if fwd.compiled.error:
                state.notes.append(f"torch.compile failed, ran eager: {fwd.compiled.error}")
        self.fwd_model, self.train_model = fwd.eval_model, fwd.train_model
        # The causality parts, each owning its records (restored from the checkpoint): the
        # recheck probes the compiled forward when the job compiles; the audit runs the step's.
        self.recheck = recheck = Recheck(
            model,
            self.fwd_model if dev.compile else None,
            dev,
            dinfo,
            cfg.seed,
            state.notes,
            rec.log,
            cfg.hardware.micro_batch,
            data.val_batches,
            saved,
        )
        kind = ("compiled" if dev.compile else "eager") + (" in DDP" if dinfo.enabled else "")
        self.audit = audit = Audit(
            cfg.budget.causality_audits, cfg.seed, model, dev, dinfo, state, rec.log, kind, saved
        )

        def causality() -> dict[str, Any]:
            """summary.json's (and the checkpoint's) causality section, from its owners' records."""
            r = recheck
            return results.causality_entry(init, r.trained, r.resume_checks, audit.records)

        self.causality = causality
        rec.open_causality(causality)  # assembled at each write
        if not self.audit.enabled:
            note = "causality audits in training disabled (budget.causality_audits=0)"
            if note not in state.notes:
                state.notes.append(note)
        self.evaluator = Evaluator(
            self.fwd_model,
            dev,
            dinfo,
            data.val_batches,
            data.final_windows,
            cfg.hardware.micro_batch,
            cfg.data.val_windows,
            data.val_count,
            model,
        )
        self.gate_inputs = data.val_batches[0][0] if data.val_batches else None
        b = cfg.budget
        self.cadence = Cadence(
            b.log_interval,
            b.eval_interval,
            b.checkpoint_interval_iters or 0,
            b.checkpoint_interval_seconds,
        )
        self.clock = BoxClock(state, dev, dinfo, box, b.log_interval)
        if self.is_main:
            self._open_files()
        rec.write_summary(results.RUNNING)

    # ------------------------------------------------------------------ the loop

    def train(self) -> results.JobSummary:
        """The loop, then what its end calls for; returns the summary written last."""
        st, clock, cadence = self.state, self.clock, self.cadence
        # Read only at sync points: the first iteration with a non-finite loss (0: none yet).
        first_bad = torch.zeros((), dtype=torch.int64, device=self.dev.device)
        it_dev = torch.full((), st.iter, dtype=torch.int64, device=self.dev.device)
        self.rec.log_point()
        with StopSignals() as signals:
            end = self._at_start()
            # After the resume recheck: its seconds are the recheck's (causality record), not the
            # warm-up of the first iteration.
            clock.start()
            while end is None:
                lr = self._set_lr(st.iter)
                audit = self.audit.due(
                    st.iter, self.schedule.fraction(st.iter, clock.estimate(st.iter))
                )
                loss, grad_norm = self.train_step(st.iter, audit)
                if audit:
                    clock.exclude(self.audit.take_excluded())  # outside the box, like an eval
                    if self.audit.leak is not None:  # no optimizer step was taken
                        end = End("leaked", self._leaked(self.audit.leak["message"]))
                        break
                st.iter = it = st.iter + 1
                it_dev += 1
                first_bad = torch.where((first_bad == 0) & ~torch.isfinite(loss), it_dev, first_bad)
                is_log, is_eval, is_ck = cadence.due(it)
                if clock.is_sync_point(it, is_log or is_eval or is_ck):
                    sync = clock.sync(it, signals.received, first_bad)
                    end = self._at_sync_point(it, sync, is_log, is_eval, is_ck, loss, lr, grad_norm)
            return self._finish(end)

    def _at_start(self) -> End | None:
        if self.state.trained:
            # Killed during a step after training: only those steps remain, redone from the
            # trained model (the final recheck follows at once, so no resume recheck).
            return End("budget")
        if self.resumed_this_start:
            self.set_stage(stages.CAUSALITY_CHECK)
            if not self.recheck("resume", self.state.iter):
                return End("leaked")
        if self.clock.spent():
            return End("budget")
        self.set_stage(stages.TRAINING)
        return None

    def _at_sync_point(
        self,
        it: int,
        sync: Sync,
        is_log: bool,
        is_eval: bool,
        is_ck: bool,
        loss: torch.Tensor,
        lr: float,
        grad_norm: torch.Tensor | None,
    ) -> End | None:
        if sync.bad_iter:
            return self._fail_non_finite(it, sync.bad_iter, loss, lr, grad_norm, is_log)
        end = self.clock.end(it)
        if is_log or end:
            self._log_progress(it, loss, lr, grad_norm)
        if is_eval and not end:  # evals and checkpoints stay out of the box
            leak = self._evaluate(final=False)  # (the final eval: _complete, after a checkpoint)
            if leak is not None:  # the model changed its state during the eval
                return End("leaked", self._leaked(leak))
        if sync.signal and not end:
            return self._stop_on_signal(it, sync.signal)
        if not end and self.cadence.checkpoint_now(is_ck, sync.since_checkpoint):
            self.save_checkpoint()
            self.clock.checkpointed()
            self.rec.write_summary(results.RUNNING)
        if end:
            return End("budget")
        self.clock.next_segment(it)
        return None

    def _finish(self, end: End) -> results.JobSummary:
        if end.result is not None:
            return end.result
        if end.why == "leaked":
            return self._leaked(self._recheck_failure("resume"))
        return self._complete()

    def train_step(self, it: int, audit: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One optimizer step over the iteration's micro-batches: (summed loss, grad norm), on the device.

        ``audit``: the first micro-batch's forward is also run on a perturbed copy and compared
        (train.audit); when the verdict is a leak, no optimizer step is taken."""
        dev, model, n_micro = self.dev, self.train_model, self.grad_accum
        loss_iter = None
        for k, (x, y) in enumerate(self.batches.get(it)):
            if dev.is_cuda:
                x = x.pin_memory().to(dev.device, non_blocking=True)
                y = y.pin_memory().to(dev.device, non_blocking=True)
            sync_grads = not self.dinfo.enabled or k == n_micro - 1
            no_sync = contextlib.nullcontext() if sync_grads else model.no_sync()  # type: ignore[operator]
            with no_sync:
                if audit and k == 0:
                    self.audit.run_copy(model, x, y, it, dev.autocast)
                with dev.autocast():  # targets never reach the model (models.loss)
                    logits = forward_logits(model, x)
                    loss = lm_loss(logits, y)
                if audit and k == 0:
                    self.audit.compare(logits, loss, y)
                del logits
                loss = loss / n_micro
                loss.backward()  # type: ignore[no-untyped-call]  # untyped in torch
            ld = loss.detach()
            loss_iter = ld if loss_iter is None else loss_iter + ld
        assert loss_iter is not None  # grad_accum >= 1
        if audit and not self.audit.verdict("train", it, "train"):
            self.optimizer.zero_grad(set_to_none=True)
            return loss_iter, None
        grad_norm = (
            torch.nn.utils.clip_grad_norm_(self.trainable, self.clip) if self.clip > 0 else None
        )
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_iter, grad_norm

    def _set_lr(self, it: int) -> float:
        """The learning rate at the fraction of the budget used (the collective clock,
        extrapolated between sync points): a function of the budget only (train.optim)."""
        lr = self.schedule(it, self.clock.estimate(it))
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        return lr

    def _reduce_loss(self, loss: torch.Tensor) -> float:
        v = loss.detach().to(torch.float64).clone()
        dist_mod.all_reduce(v, "sum", self.dinfo)
        return float(v.item()) / self.dinfo.world_size

    def _log_progress(
        self, it: int, loss: torch.Tensor, lr: float, grad_norm: torch.Tensor | None
    ) -> None:
        """A log iteration (all ranks: the loss is reduced): metrics row and train.log line."""
        st = self.state
        st.last_train_loss = loss_val = self._reduce_loss(loss)
        if self.dev.is_cuda:
            pm = self.dev.peak_memory_mb()
            st.peak_memory_mb = max(st.peak_memory_mb or 0.0, pm) if pm is not None else None
        self.rec.write_train(it, loss_val, lr, grad_norm)
        self.rec.log_point()

    def _fail_non_finite(
        self,
        it: int,
        bad_iter: int,
        loss: torch.Tensor,
        lr: float,
        grad_norm: torch.Tensor | None,
        is_log: bool,
    ) -> End:
        """Fail the run (no checkpoint of a broken model)."""
        self.state.last_train_loss = loss_val = self._reduce_loss(loss)
        if is_log:
            self.rec.write_train(it, loss_val, lr, grad_norm)
        msg = (
            f"non-finite training loss at iteration {bad_iter} (loss {loss_val} at iteration {it}); "
            f"the run diverged: lower optim.lr (now {self.cfg.optim.lr}) or check the data"
        )
        self.rec.log(f"FAILED: {msg}")
        result = self.rec.write_summary(
            results.FAILED, error=msg, failed_iter=bad_iter, exit_code=EXIT_FAILED
        )
        return End("stopped", result)

    def _stop_on_signal(self, it: int, signum: int) -> End:
        self.save_checkpoint()
        name = signal_name(signum)
        self.state.notes.append(f"stopped by {name} at iteration {it}; checkpointed, resumable")
        self.rec.log(
            f"{name} received: checkpointed at iteration {it}; exiting with code {EXIT_PREEMPTED} "
            f"({self._resume_hint()})"
        )
        result = self.rec.write_summary(results.RUNNING, stopped_by=name, exit_code=EXIT_PREEMPTED)
        return End("stopped", result)

    def _resume_hint(self) -> str:
        matrix = self.jd.path.parent
        if results.is_matrix_dir(matrix):
            return f"to resume: python -m ablate.matrix resume={matrix}"
        return "start the job again to resume"

    def _evaluate(self, final: bool) -> str | None:
        """An eval (all ranks), its counters, then its records (rank 0); its time is eval time.
        The final eval is audited (train.audit), and every eval is checked for a change of the
        model's state (train.evalstate): the leak's message, and nothing of the eval recorded,
        when either failed; None when it was recorded."""
        st, rec, evaluator = self.state, self.rec, self.evaluator
        t0 = time.perf_counter()
        audit = self.audit if final and self.audit.enabled else None
        result: FinalEval | None = evaluator.final(audit) if final else None
        val = result.periodic_loss if result is not None else evaluator.periodic()
        if audit is not None:
            audited = audit.verdict("final eval", st.iter, "eval")
            t0 += audit.take_excluded()  # audit time is not eval time
            if not audited:
                assert audit.leak is not None
                return str(audit.leak["message"])
        if evaluator.changed is not None:
            when = "final eval" if final else "periodic eval"
            return self.audit.state_changed(when, st.iter, evaluator.changed)
        if result is not None:  # the periodic windows come first: one curve
            st.final_val_loss = result.loss
        st.record_eval(val)
        st.gates = gate_stats(self.raw_model) if self.is_main else {}
        shares = None  # the final eval's gate shares (rank 0), handed to the recorder
        if final and self.is_main and self.gate_inputs is not None:
            shares = gate_shares(self.raw_model, self.dev, self.gate_inputs)
        if self.is_main:
            fp = self.batches.global_fingerprint(st.iter - 1) if st.iter > 0 else None
            rec.write_eval(val, result, fp, shares)
        dt = time.perf_counter() - t0
        st.eval_seconds += dt
        rec.eval_done(val, result, dt)
        return None

    # ------------------------------------------------------------------ setup

    def _open_files(self) -> None:
        """Rank 0: metrics.jsonl (truncated to the checkpoint), env.json, identity.json and
        train.log's first lines."""
        jd, rec, st, cfg, facts = self.jd, self.rec, self.state, self.cfg, self.facts
        # From iteration 0 nothing of an earlier start is kept (its batch record would repeat).
        it = st.iter
        # A checkpoint of the trained model precedes the final eval: its records go too.
        dropped = results.truncate_metrics_after(
            jd.metrics, it if it > 0 else -1, evals_at_iteration=not st.trained
        )
        notes_now = []
        if dropped:
            note = (
                f"{len(dropped)} unreadable metrics line(s) dropped on resume (first: {dropped[0]})"
            )
            st.notes.append(note)
            notes_now.append(f"note: {note}")
        rec.open_metrics(trackers.open_metrics(cfg, jd, MetricsWriter(jd.metrics), it, rec.warn))
        if it == 0:
            rec.write_batch_record(self.batches.global_fingerprint(0))
        results.atomic_write_json(jd.env, header.env_record(jd, facts, self.dinfo, st).to_dict())
        assert facts.dataset is not None
        run_identity.write(jd, cfg, facts.dataset, self.dev.name, self.dinfo.world_size, rec.warn)
        for line in header.header_lines(jd, facts, self.dinfo, st, notes_now):
            rec.log(line)

    # ------------------------------------------------------------------ checkpoint

    def _restore(self, ck: dict[str, Any], init: dict[str, Any] | None) -> Any:
        """Model, optimizer, run state and RNG from a checkpoint; returns its causality records.
        From the run state on, a failure records those records (until the parts own them)."""
        try:
            self.raw_model.load_state_dict(ck["model"])
            self.optimizer.load_state_dict(ck["optimizer"])
        except (RuntimeError, ValueError, KeyError, TypeError) as e:  # torch's words: many lines
            raise ConfigError(ckpt_mod.mismatch_message(self.jd.checkpoint, e)) from None
        assert self.facts.optim_record is not None  # built before the restore
        keep_implementation(self.optimizer, self.facts.optim_record)
        self.state.load_state_dict(ck["state"])
        saved = ck["state"].get("causality")
        if isinstance(saved, dict):  # a value of the wrong type is dropped, never a lost summary
            got = {k: saved.get(k) for k in ("trained", "resume_checks", "audits")}
            trained = got["trained"] if isinstance(got["trained"], dict) else None
            resume = got["resume_checks"] if isinstance(got["resume_checks"], list) else None
            audits = got["audits"] if isinstance(got["audits"], list) else None
            self.rec.open_causality(lambda: results.causality_entry(init, trained, resume, audits))
        rngs = ck.get("rng") or []
        if len(rngs) == self.dinfo.world_size:
            ckpt_mod.restore_rng(rngs[self.dinfo.rank], self.dev.device)
        else:
            ckpt_mod.seed_all(self.cfg.seed + self.dinfo.rank * RANK_SEED_OFFSET + self.state.iter)
            self.state.notes.append(
                f"resumed at iteration {self.state.iter} with world size {self.dinfo.world_size} "
                f"(checkpoint had {len(rngs)}): dropout RNG reseeded"
            )
        return saved

    def save_checkpoint(self) -> None:
        t0 = time.perf_counter()
        rngs = dist_mod.all_gather_object(ckpt_mod.capture_rng(self.dev.device), self.dinfo)
        if self.is_main:
            state = {
                **self.state.state_dict(),
                "causality": self.causality(),
                "world_size": self.dinfo.world_size,
                "seed": self.cfg.seed,
                "step": self.cfg.step.name,
            }
            ckpt_mod.save_checkpoint(
                self.jd.checkpoint,
                {
                    "model": self.raw_model.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "state": state,
                    "rng": rngs,
                },
            )
            if self.rec.metrics is not None:
                self.rec.metrics.sync()
        dist_mod.barrier(self.dinfo)  # nobody runs ahead (or exits) before the file is whole
        dt = time.perf_counter() - t0
        self.state.checkpoint_seconds += dt
        self.rec.log(f"checkpoint at iteration {self.state.iter} ({dt:.2f}s)")

    # ------------------------------------------------------------------ the end

    def _complete(self) -> results.JobSummary:
        """The steps after training, ordered so that a kill at any point restarts into the same
        end state (the job directory's ``python -m ablate.train``, or ``resume=``):

        1. checkpoint.pt of the trained model (``state.trained``): a restart resumes here;
        2. the final eval (final_eval.json), redone after a restart: same weights, same windows;
        3. summary.json says completed: the measured result is on disk;
        4. the causality recheck of the trained weights, recorded in summary.json;
        5. model.safetensors per ``budget.keep``, then checkpoint.pt removed unless kept;
        6. DONE. A restart that finds 3-5 done and no checkpoint only writes DONE (train/job.py).
        """
        rec = self.rec
        if not self.state.trained:
            self.state.trained = True
            self.save_checkpoint()  # all ranks
        self.set_stage(stages.FINAL_EVAL)
        leak = self._evaluate(final=True)
        if leak is not None:  # its audit or the state check failed: nothing of it is recorded
            return self._leaked(leak)
        for w in budget_warnings(rec.summary(results.COMPLETED)):
            if w not in self.state.notes:  # schedule cut short, box overrun, repeated data
                rec.warn(w)
        if self.val_note and self.val_note not in self.state.notes:
            self.state.notes.append(self.val_note)
        # The measured result goes to disk first; nothing after this may lose it.
        result = rec.write_summary(results.COMPLETED, exit_code=EXIT_COMPLETED)
        self.set_stage(stages.RECHECK)
        if not self.recheck("final", self.state.iter):
            return self._leaked(self._recheck_failure("final"))
        result = rec.write_summary(results.COMPLETED, exit_code=EXIT_COMPLETED)
        try:
            self._final_report(result)
        except Exception as e:  # a report line must never turn a measured run into a failed one
            note = f"post-training step failed after the result was saved: {type(e).__name__}: {e}"
            try:
                self.state.notes.append(tail(note, 500))
                result = rec.write_summary(
                    results.COMPLETED,
                    exit_code=EXIT_COMPLETED,
                    post_training_error=tail(traceback.format_exc()),
                )
                rec.log(f"warning: {note}")
            except Exception:
                pass
        self.set_stage(stages.WRITING)
        self._keep_model_and_mark_done()
        return result

    def set_stage(self, name: str) -> None:
        """stage.json for the live view and status= (rank 0). A view's file: failing to write it
        must not fail the run."""
        if not self.is_main:
            return
        try:
            results.write_stage(self.jd, name)
        except OSError as e:
            self.rec.log(f"warning: could not write {results.STAGE}: {e}")

    def _keep_model_and_mark_done(self) -> None:
        """What budget.keep says a DONE job keeps of its model, then DONE (all ranks call this)."""
        keep = self.cfg.budget.keep  # a Keep: the schema refuses any other value
        if keep == Keep.checkpoint:
            self.save_checkpoint()  # all ranks: the full state at the end, not the last periodic one
        if self.is_main and keep in (Keep.weights, Keep.checkpoint):
            # Before DONE: a DONE job has its weights. A failure here loses nothing measured.
            try:
                ckpt_mod.save_final_weights(
                    self.jd.weights, self.raw_model, to_container(self.cfg.model)
                )
            except Exception as e:
                keep = Keep.checkpoint  # the weights are still in checkpoint.pt
                self.rec.log(
                    f"warning: final weights not written ({type(e).__name__}: {e}); checkpoint.pt kept"
                )
        if self.is_main:
            if keep != Keep.checkpoint:
                # Optimizer state is only for resume, and a DONE job is never resumed. Removed
                # before DONE, never after: a DONE job holds no stale checkpoint, and a kill in
                # between leaves only DONE to write (the weights and the recheck are on disk).
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.jd.checkpoint)
            self.jd.mark_done()
        dist_mod.barrier(self.dinfo)

    def _recheck_failure(self, when: str) -> str:
        return (
            f"the trained weights failed the causality recheck ({when}, iteration {self.state.iter}): "
            f"{self.recheck.message()}"
        )

    def _leaked(self, msg: str) -> results.JobSummary:
        """The model sees the future (the recheck of its weights or an audit in training said
        ``msg``): the run is kept on disk but marked leaked (and DONE, since training it again
        would leak again)."""
        self.rec.log(f"LEAKED: {msg}")
        self.state.notes.append(tail(msg, 500))
        result = self.rec.write_summary(results.LEAKED, error=msg, exit_code=EXIT_FAILED)
        self._keep_model_and_mark_done()  # the leaking weights stay inspectable, as budget.keep says
        return result

    def _final_report(self, s: results.JobSummary) -> None:
        if self.is_main:
            for line in final_lines(s):
                self.rec.log(line)


# ---------------------------------------------------------------------- entry


def run(job_dir: Path | str, dinfo: dist_mod.DistInfo) -> results.JobSummary:
    """Set up and train one job; a failure is recorded in summary.json (rank 0) and raised."""
    jd, state = JobDir(Path(job_dir)), RunState()
    rec = Recorder(jd, dinfo, state, RunFacts(dinfo.world_size, dinfo.local_world_size))
    try:
        return Trainer(jd, dinfo, state, rec).train()
    except DiskFullError as e:
        rec.record_failure(str(e), exit_code=EXIT_FAILED)
        raise
    except AblateError as e:
        msg = " ".join(str(e).split())
        rec.record_failure(msg, exit_code=EXIT_USER_ERROR)
        raise
    except Exception as e:
        if is_disk_full(e, jd.path):  # e.g. train.log or a torch write: name the cause
            where = getattr(e, "filename", None) or jd.path
            msg = f"no space left on device while writing {where}; free space there and resume"
            rec.record_failure(msg, exit_code=EXIT_FAILED)
            raise DiskFullError(msg) from e
        lost = dist_mod.lost_rank(e, dinfo, rec.facts.rank_hosts, state.iter)
        if lost is not None:  # another rank is gone: say so, not only the backend's words
            rec.record_failure(lost, exit_code=EXIT_FAILED)
            raise dist_mod.RankLostError(lost) from e
        rec.record_failure(tail(traceback.format_exc()), exit_code=EXIT_FAILED)
        raise
    finally:
        rec.close()
        dist_mod.shutdown(dinfo)
