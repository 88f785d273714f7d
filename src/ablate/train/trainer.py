"""The Trainer: one job's setup and its training loop (every rank runs it; rank 0 writes files).

1. ``config.yaml`` -> device, precision, process group; global batch -> gradient accumulation.
2. ``seed_all(seed)`` then ``build_model`` (identical init on every rank); AdamW groups from
   ``model.param_kind``; then each rank reseeds its dropout RNG with ``seed + rank offset``.
3. ``checkpoint.pt`` present -> restore model, optimizer, ``RunState`` and every rank's RNG state;
   metrics past the checkpoint's iteration are truncated and re-logged as training redoes them.
4. The loop (``train``): a step on ``TrainBatches.get(i)`` (a pure function of seed and i); at a
   sync point the ``BoxClock`` measures and plans (module ``clock``); then eval, checkpoint and log
   by cadence. Evals every ``budget.eval_interval`` iterations and at the end (the final one on
   the full validation set); checkpoints every ``checkpoint_interval_iters`` /
   ``checkpoint_interval_seconds`` and on SIGTERM/SIGUSR1/SIGUSR2; ``summary.json`` rewritten
   atomically after every eval and at the end; DONE written last.

Exactness of resume: in iteration mode (``budget.max_iters``) the schedule depends on the
iteration only, so an interrupted-and-resumed CPU run reproduces the uninterrupted loss curve
exactly. In time-box mode the learning rate is a function of the fraction of the box elapsed
(training time, which differs in every run); resume continues the box from the checkpoint's
elapsed seconds but is not bit-exact.

Why this file is over 400 lines: setup (data, model, resume, compile, DDP, files) and the end of a
run (final eval, causality verdict, what is kept, DONE) set the trainer's own attributes, so they
stay with the loop; what does not (clock, state, signals, evals, records, the job entry) lives in
its own module. ``train()`` itself is one screen.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

import models
from ablate import plugins as plugins_mod
from ablate import results
from ablate.atomic import is_disk_full
from ablate.config import Keep, RunConfig, load_job_config, to_container
from ablate.data import TrainBatches, ValWindows, final_val_windows, resolve_dataset
from ablate.errors import AblateError, ConfigError, DiskFullError
from ablate.outcome import EXIT_COMPLETED, EXIT_FAILED, EXIT_PREEMPTED, EXIT_USER_ERROR
from ablate.results import JobDir, MetricsWriter
from ablate.results import stage as stages
from ablate.train import causality, evals, records, run_identity, trackers
from ablate.train import checkpoint as ckpt_mod
from ablate.train import distributed as dist_mod
from ablate.train.clock import BoxClock
from ablate.train.compile import CompileResult, compile_model
from ablate.train.device import DeviceSetup, probe_sdpa, setup_device
from ablate.train.optim import Schedule, build_optimizer, grad_accum_for, keep_implementation
from ablate.train.signals import StopSignals, signal_name
from ablate.train.state import RunState

RANK_SEED_OFFSET = 1_000_003  # dropout RNG of rank r: seed + r * offset (after model init)


class _Stop(Exception):
    """Internal: leave the loop (failed or preempted) with ``Trainer.result`` already decided."""


class Trainer:
    def __init__(self, job_dir: Path | str, dinfo: dist_mod.DistInfo):
        self.jd = JobDir(Path(job_dir))
        self.dinfo = dinfo
        self.is_main = dinfo.is_main
        self.state = RunState()  # the counters; restored from a checkpoint
        self.cfg: RunConfig | None = None  # set in setup
        self.dev: DeviceSetup | None = None
        self.log = records.TrainLog(None, False)
        self.metrics: MetricsWriter | None = None
        self.schedule: Schedule | None = None
        self.optim_record: dict | None = None
        self.flops_per_token: float | None = None
        self.plugins: dict = {}
        self.compiled = CompileResult(requested=False, compiled=False)  # set in setup
        self.final_windows = None  # ValWindows of the final eval (set in setup)
        # Known only to this process start (not checkpointed):
        self.last_eval_iter: int | None = None
        self.final_eval_seconds: float | None = None
        self.gate_shares: dict = {}  # set by the final eval
        self.causality: dict = results.causality_entry(None)  # summary.json's "causality"
        self.resumed_this_start = False
        self.rank_hosts: list[tuple[str, str | None]] = []  # (hostname, address) by rank

    def write_summary(self, status: str, **extra: Any) -> dict:
        s = records.summary(self, status, **extra)
        if self.is_main:
            self.jd.write_summary(s)
        return s

    # ------------------------------------------------------------------ the loop

    def train(self) -> dict:
        st, b = self.state, self.cfg.budget
        clock = BoxClock(st, self.dev, self.dinfo, b.box_seconds, b.max_iters, b.log_interval)
        log_every, eval_every = b.log_interval, b.eval_interval  # locals: read every iteration
        ck_iters = b.checkpoint_interval_iters or 0
        ck_secs = b.checkpoint_interval_seconds
        # Read only at sync points: the first iteration with a non-finite loss (0: none yet).
        first_bad = torch.zeros((), dtype=torch.int64, device=self.dev.device)
        it_dev = torch.full((), st.iter, dtype=torch.int64, device=self.dev.device)
        self._since_log = (st.train_seconds, st.timed_iters)
        with StopSignals() as signals:
            if st.trained:
                # Killed during a step after training: only those steps remain, redone from the
                # trained model (the final recheck follows at once, so no resume recheck).
                return self._complete()
            if self.resumed_this_start:
                self.set_stage(stages.CAUSALITY_CHECK)
                if not causality.recheck(self, "resume"):
                    return self._leaked("resume")
            if clock.spent():
                return self._complete()
            self.set_stage(stages.TRAINING)
            while True:
                lr = self._set_lr(clock, st.iter)
                loss, grad_norm = self.train_step(st.iter)
                st.iter = it = st.iter + 1
                it_dev += 1
                first_bad = torch.where((first_bad == 0) & ~torch.isfinite(loss), it_dev, first_bad)

                is_log, is_eval = it % log_every == 0, it % eval_every == 0
                is_ck = ck_iters > 0 and it % ck_iters == 0
                if not clock.is_sync_point(it, is_log or is_eval or is_ck):
                    continue
                sync = clock.sync(it, signals.received, first_bad)
                if sync.bad_iter:
                    self._fail_non_finite(it, sync.bad_iter, loss, lr, grad_norm, is_log)
                end = clock.end(it)
                if is_log or end:
                    self._log_progress(it, loss, lr, grad_norm)
                if is_eval and not end:  # evals and checkpoints stay out of the box
                    evals.eval_and_record(self)  # (the final eval: _complete, after a checkpoint)
                if sync.signal and not end:
                    self._stop_on_signal(it, sync.signal)
                if not end and (
                    is_ck or (ck_secs is not None and sync.since_checkpoint >= ck_secs)
                ):
                    self.save_checkpoint()
                    clock.checkpointed()
                    self.write_summary(results.RUNNING)
                if end:
                    break
                clock.next_segment(it)
            return self._complete()

    def train_step(self, it: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One optimizer step over the iteration's micro-batches: (summed loss, grad norm), on the device."""
        dev, model, n_micro = self.dev, self.train_model, self.grad_accum
        loss_iter = None
        for k, (x, y) in enumerate(self.batches.get(it)):
            if dev.is_cuda:
                x = x.pin_memory().to(dev.device, non_blocking=True)
                y = y.pin_memory().to(dev.device, non_blocking=True)
            sync_grads = not self.dinfo.enabled or k == n_micro - 1
            with contextlib.nullcontext() if sync_grads else model.no_sync():
                with dev.autocast():
                    _, loss = model(x, y)
                loss = loss / n_micro
                loss.backward()
            ld = loss.detach()
            loss_iter = ld if loss_iter is None else loss_iter + ld
        grad_norm = (
            torch.nn.utils.clip_grad_norm_(self.trainable, self.clip) if self.clip > 0 else None
        )
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_iter, grad_norm

    def _set_lr(self, clock: BoxClock, it: int) -> float:
        """The learning rate at the fraction of the budget used (the collective clock,
        extrapolated between sync points): a function of the budget only (train.optim)."""
        lr = self.schedule(it, clock.estimate(it))
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        return lr

    def _reduce_loss(self, loss: torch.Tensor) -> float:
        v = loss.detach().to(torch.float64).clone()
        dist_mod.all_reduce(v, "sum", self.dinfo)
        return v.item() / self.dinfo.world_size

    def _log_progress(self, it: int, loss: torch.Tensor, lr: float, grad_norm) -> None:
        """A log iteration (all ranks: the loss is reduced): metrics row and train.log line."""
        st = self.state
        st.last_train_loss = loss_val = self._reduce_loss(loss)
        if self.dev.is_cuda:
            pm = self.dev.peak_memory_mb()
            st.peak_memory_mb = max(st.peak_memory_mb or 0.0, pm) if pm is not None else None
        self._write_train_row(it, loss_val, lr, grad_norm)
        self._since_log = (st.train_seconds, st.timed_iters)

    def _write_train_row(self, it: int, loss_val: float, lr: float, grad_norm) -> None:
        if self.is_main:
            row = records.train_row(self, it, loss_val, lr, grad_norm, self._since_log)
            self.metrics.write(row)
            self.log(records.train_line(self, row))

    def _fail_non_finite(
        self, it: int, bad_iter: int, loss, lr: float, grad_norm, is_log: bool
    ) -> None:
        """Fail the run (no checkpoint of a broken model)."""
        self.state.last_train_loss = loss_val = self._reduce_loss(loss)
        if is_log:
            self._write_train_row(it, loss_val, lr, grad_norm)
        msg = (
            f"non-finite training loss at iteration {bad_iter} (loss {loss_val} at iteration {it}); "
            f"the run diverged: lower optim.lr (now {self.cfg.optim.lr}) or check the data"
        )
        self.log(f"FAILED: {msg}")
        self.result = self.write_summary(
            results.FAILED, error=msg, failed_iter=bad_iter, exit_code=EXIT_FAILED
        )
        raise _Stop()

    def _stop_on_signal(self, it: int, signum: int) -> None:
        self.save_checkpoint()
        name = signal_name(signum)
        self.state.notes.append(f"stopped by {name} at iteration {it}; checkpointed, resumable")
        self.log(
            f"{name} received: checkpointed at iteration {it}; exiting with code {EXIT_PREEMPTED} "
            f"(start the job again to resume)"
        )
        self.result = self.write_summary(results.RUNNING, stopped_by=name, exit_code=EXIT_PREEMPTED)
        raise _Stop()

    # ------------------------------------------------------------------ setup

    def setup(self) -> None:
        cfg = self.cfg = load_job_config(self.jd.config)
        try:
            self.causality = results.causality_entry(results.read_causality_init(self.jd))
        except AblateError as e:  # an unreadable preflight record: the job is reported unchecked
            self.state.notes.append(
                f"preflight causality record unreadable ({e}); reported as unchecked"
            )
        b = cfg.budget  # every value was validated by load_job_config (ablate.config.validate_run)
        self.schedule = Schedule(cfg.optim, b.max_iters, b.box_seconds)
        self.clip = cfg.optim.grad_clip

        self.dev = dev = setup_device(cfg.hardware, self.dinfo.local_rank)
        self.compiled = CompileResult(requested=cfg.hardware.compile, compiled=False)
        if self.is_main:
            # Under the local launcher our stdout already goes to train.log: do not write it twice.
            captured = os.environ.get(results.LOG_CAPTURED_ENV) == "1"
            self.log = records.TrainLog(None if captured else self.jd.log, True)
        dist_mod.init(self.dinfo, dev.device)
        self.rank_hosts = dist_mod.rank_hosts(self.dinfo)  # env.json; names a lost rank's host
        ws, rank = self.dinfo.world_size, self.dinfo.rank
        self.grad_accum = grad_accum_for(
            cfg.optim.tokens_per_iter, cfg.model.block_size, cfg.hardware.micro_batch, ws
        )
        self._setup_data()

        # Model: identical init on every rank; the researcher's own modules first (same as preflight).
        self.plugins = plugins_mod.load_for(cfg)
        seed = cfg.seed
        ckpt_mod.seed_all(seed)
        try:
            model = models.build_model(cfg.model)
        except models.ModelConfigError as e:
            raise ConfigError(str(e)) from None
        model.to(dev.device)
        self.raw_model = model
        dev.sdpa = probe_sdpa(dev, cfg.model.n_head, cfg.model.n_embd // cfg.model.n_head)
        self.flops_per_token = float(model.flops_per_token())
        self.optimizer, self.optim_record = build_optimizer(model, cfg.optim, dev.device.type)
        self.trainable = [p for g in self.optimizer.param_groups for p in g["params"]]

        # Resume, or seed this rank's dropout RNG.
        ck = ckpt_mod.load_checkpoint(self.jd.checkpoint)
        if ck is not None:
            self._restore(ck)
            self.resumed_this_start = True
        else:
            ckpt_mod.seed_all(seed + rank * RANK_SEED_OFFSET)
        if self.val_note and self.val_note not in self.state.notes:
            self.state.notes.append(self.val_note)
        self._setup_forward(model)

        if self.is_main:  # files
            # From iteration 0 nothing of an earlier start is kept (its batch record would repeat).
            it = self.state.iter
            # A checkpoint of the trained model precedes the final eval: its records go too.
            dropped = results.truncate_metrics_after(
                self.jd.metrics, it if it > 0 else -1, evals_at_iteration=not self.state.trained
            )
            notes_now = []
            if dropped:
                note = f"{len(dropped)} unreadable metrics line(s) dropped on resume (first: {dropped[0]})"
                self.state.notes.append(note)
                notes_now.append(f"note: {note}")
            self.metrics = trackers.open_metrics(
                cfg, self.jd, MetricsWriter(self.jd.metrics), it, self._tracker_warning
            )
            if it == 0:
                # The data every step of this seed must share, proven per run (the report compares).
                self.metrics.write(
                    {
                        "kind": "batch",
                        "iter": 0,
                        "tokens_seen": 0,
                        "train_seconds": 0.0,
                        "batch_iter": 0,
                        "batch_fingerprint": self.batches.global_fingerprint(0),
                    }
                )
            results.atomic_write_json(self.jd.env, records.env_record(self, model))
            run_identity.write(self)
            for line in records.header_lines(self, model, notes_now):
                self.log(line)
        self.write_summary(results.RUNNING)

    def _setup_data(self) -> None:
        cfg, ws, rank = self.cfg, self.dinfo.world_size, self.dinfo.rank
        # Rank 0 resolves first (it may tokenize into a cache), then the others.
        if self.is_main:
            ds = resolve_dataset(cfg.data, cfg.model.vocab_size)
        dist_mod.barrier(self.dinfo)
        if not self.is_main:
            ds = resolve_dataset(cfg.data, cfg.model.vocab_size)
        self.dataset = ds
        T, micro = cfg.model.block_size, cfg.hardware.micro_batch
        self.batches = TrainBatches(ds.train_paths, T, micro, self.grad_accum, ws, rank, cfg.seed)
        self.val_batches = ValWindows(ds.val_path, T, cfg.data.val_windows, ws, rank).batches(micro)
        if self.dev.is_cuda:
            self.val_batches = [(x.pin_memory(), y.pin_memory()) for x, y in self.val_batches]
        # The final eval: a superset of the periodic windows, sized by data.val_tokens.
        n_final, self.val_note = final_val_windows(
            ds.val_path, T, cfg.data.val_tokens, cfg.data.val_windows
        )
        self.final_windows = ValWindows(ds.val_path, T, n_final, ws, rank)
        self.val_fingerprint = self.final_windows.fingerprint() if self.is_main else None

    def _setup_forward(self, model) -> None:
        """torch.compile (its time is warm-up, not training) and the DDP wrapper."""
        dev, fwd = self.dev, model
        if dev.compile:
            t0 = time.perf_counter()
            val0 = self.val_batches[0] if self.val_batches else None
            fwd, self.compiled = compile_model(
                model,
                dev.autocast,
                self.batches.get(self.state.iter)[0],
                val0,
                dev.device,
                self.dinfo,
            )
            self.state.warmup_seconds += time.perf_counter() - t0
            dev.compile = self.compiled.compiled  # from here on: what really runs
            if self.compiled.error:
                self.state.notes.append(f"torch.compile failed, ran eager: {self.compiled.error}")
        self.fwd_model = fwd  # eval forward (no DDP wrapper)
        self.train_model = fwd
        if self.dinfo.enabled:
            # Buffers are created identically on every rank (same seed); no per-forward broadcast.
            no_buffer_sync = (
                {"forward_sync_buffers": False}
                if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters
                else {"broadcast_buffers": False}
            )
            self.train_model = DDP(
                fwd, device_ids=[dev.device.index] if dev.is_cuda else None, **no_buffer_sync
            )

    def _tracker_warning(self, message: str) -> None:
        self.state.notes.append(message)
        self.log(f"warning: {message}")

    # ------------------------------------------------------------------ checkpoint

    def _restore(self, ck: dict) -> None:
        try:
            self.raw_model.load_state_dict(ck["model"])
            self.optimizer.load_state_dict(ck["optimizer"])
        except (RuntimeError, ValueError, KeyError, TypeError) as e:  # torch's words: many lines
            raise ConfigError(ckpt_mod.mismatch_message(self.jd.checkpoint, e)) from None
        keep_implementation(self.optimizer, self.optim_record)
        self.state.load_state_dict(ck["state"])
        saved = ck["state"].get("causality")
        if isinstance(saved, dict):
            self.causality["trained"] = saved.get("trained")
            self.causality["resume_checks"] = list(saved.get("resume_checks") or [])
        rngs = ck.get("rng") or []
        if len(rngs) == self.dinfo.world_size:
            ckpt_mod.restore_rng(rngs[self.dinfo.rank], self.dev.device)
        else:
            ckpt_mod.seed_all(self.cfg.seed + self.dinfo.rank * RANK_SEED_OFFSET + self.state.iter)
            self.state.notes.append(
                f"resumed at iteration {self.state.iter} with world size {self.dinfo.world_size} "
                f"(checkpoint had {len(rngs)}): dropout RNG reseeded"
            )

    def save_checkpoint(self) -> None:
        t0 = time.perf_counter()
        rngs = dist_mod.all_gather_object(ckpt_mod.capture_rng(self.dev.device), self.dinfo)
        if self.is_main:
            state = {
                **self.state.state_dict(),
                "causality": self.causality,
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
            if self.metrics is not None:
                self.metrics.sync()
        dist_mod.barrier(self.dinfo)  # nobody runs ahead (or exits) before the file is whole
        dt = time.perf_counter() - t0
        self.state.checkpoint_seconds += dt
        self.log(f"checkpoint at iteration {self.state.iter} ({dt:.2f}s)")

    # ------------------------------------------------------------------ the end

    def _complete(self) -> dict:
        """The steps after training, ordered so that a kill at any point restarts into the same
        end state (the job directory's ``python -m ablate.train``, or ``resume=``):

        1. checkpoint.pt of the trained model (``state.trained``): a restart resumes here;
        2. the final eval (final_eval.json), redone after a restart: same weights, same windows;
        3. summary.json says completed: the measured result is on disk;
        4. the causality recheck of the trained weights, recorded in summary.json;
        5. model.safetensors per ``budget.keep``, then checkpoint.pt removed unless kept;
        6. DONE. A restart that finds 3-5 done and no checkpoint only writes DONE (train/job.py).
        """
        if not self.state.trained:
            self.state.trained = True
            self.save_checkpoint()  # all ranks
        self.set_stage(stages.FINAL_EVAL)
        evals.eval_and_record(self, final=True)
        for w in records.budget_warnings(records.summary(self, results.COMPLETED)):
            if w not in self.state.notes:  # schedule cut short, box overrun, repeated data
                self.state.notes.append(w)
                self.log(f"warning: {w}")
        # The measured result goes to disk first; nothing after this may lose it.
        result = self.write_summary(results.COMPLETED, exit_code=EXIT_COMPLETED)
        self.set_stage(stages.RECHECK)
        if not causality.recheck(self, "final"):
            return self._leaked("final")
        result = self.write_summary(results.COMPLETED, exit_code=EXIT_COMPLETED)
        try:
            self._final_report(result)
        except Exception as e:  # a report line must never turn a measured run into a failed one
            note = f"post-training step failed after the result was saved: {type(e).__name__}: {e}"
            try:
                self.state.notes.append(records.tail(note, 500))
                result = self.write_summary(
                    results.COMPLETED,
                    exit_code=EXIT_COMPLETED,
                    post_training_error=records.tail(traceback.format_exc()),
                )
                self.log(f"warning: {note}")
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
            self.log(f"warning: could not write {results.STAGE}: {e}")

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
                self.log(
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

    def _leaked(self, when: str) -> dict:
        """The trained weights see the future: the run is kept on disk but marked leaked (and DONE,
        since training it again would leak again)."""
        msg = (
            f"the trained weights failed the causality recheck ({when}, iteration {self.state.iter}): "
            f"{(self.causality.get('trained') or {}).get('message', '')}"
        )
        self.log(f"LEAKED: {msg}")
        self.state.notes.append(records.tail(msg, 500))
        self.result = self.write_summary(results.LEAKED, error=msg, exit_code=EXIT_FAILED)
        self._keep_model_and_mark_done()  # the leaking weights stay inspectable, as budget.keep says
        return self.result

    def _final_report(self, s: dict) -> None:
        if self.is_main:
            for line in records.final_lines(s):
                self.log(line)

    # ------------------------------------------------------------------ entry

    def run(self) -> dict:
        try:
            self.setup()
            try:
                return self.train()
            except _Stop:
                return self.result
        except DiskFullError as e:
            self._record_failure(str(e), exit_code=EXIT_FAILED)
            raise
        except AblateError as e:
            msg = " ".join(str(e).split())
            self._record_failure(msg, exit_code=EXIT_USER_ERROR)
            raise
        except Exception as e:
            if is_disk_full(e, self.jd.path):  # e.g. train.log or a torch write: name the cause
                where = getattr(e, "filename", None) or self.jd.path
                msg = f"no space left on device while writing {where}; free space there and resume"
                self._record_failure(msg, exit_code=EXIT_FAILED)
                raise DiskFullError(msg) from e
            lost = dist_mod.lost_rank(e, self.dinfo, self.rank_hosts, self.state.iter)
            if lost is not None:  # another rank is gone: say so, not only the backend's words
                self._record_failure(lost, exit_code=EXIT_FAILED)
                raise dist_mod.RankLostError(lost) from e
            self._record_failure(records.tail(traceback.format_exc()), exit_code=EXIT_FAILED)
            raise
        finally:
            if self.metrics is not None:
                self.metrics.close()
            self.log.close()
            dist_mod.shutdown(self.dinfo)

    def _record_failure(self, error: str, exit_code: int) -> None:
        if not self.is_main:
            return
        try:
            self.log(
                f"FAILED at iteration {self.state.iter}: "
                f"{error.strip().splitlines()[-1] if error.strip() else error}"
            )
        except Exception:
            pass
        record = self.jd.summary_record() if self.jd.path.is_dir() else None  # never raises
        written = record.status if record is not None else None
        if self.jd.is_done() or written in (results.COMPLETED, results.LEAKED):
            return  # a measured result is final: a failure after it (a closed pipe) changes nothing
        try:
            if self.jd.path.is_dir():
                self.write_summary(
                    results.FAILED, error=error, failed_iter=self.state.iter, exit_code=exit_code
                )
        except Exception:
            pass
