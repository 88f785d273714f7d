"""One training job: ``run_job(job_dir)`` reads ``config.yaml`` and writes the job's results.

Outline of a job (every rank runs this; only rank 0 writes files):

1. ``config.yaml`` -> RunConfig; device, precision and the process group; global batch ->
   gradient accumulation (a batch that does not divide is an AblateError).
2. ``torch.manual_seed(seed)`` then ``build_model`` (identical init on every rank); AdamW groups
   from ``model.param_kind``; then each rank reseeds its dropout RNG with ``seed + rank offset``.
3. ``checkpoint.pt`` present -> restore model, optimizer, counters and every rank's RNG state;
   metrics past the checkpoint's iteration are truncated and re-logged as training redoes them.
4. The loop. Iteration ``i`` trains on ``TrainBatches.get(i)`` (a pure function of seed and i).
   The host never waits for the device except at *sync points*; see "Time accounting" below.
5. Evals every ``budget.eval_interval`` iterations and at the end; checkpoints every
   ``checkpoint_interval_iters`` / ``checkpoint_interval_seconds`` and on SIGTERM/SIGUSR1/SIGUSR2;
   ``summary.json`` rewritten atomically after every eval and at the end; DONE written last.

Time accounting
---------------
``train_seconds`` (the box) counts wall time spent in training iterations only. The first
iteration of every process start (compile, allocator warm-up) goes to ``warmup_seconds``, evals to
``eval_seconds`` and checkpoints to ``checkpoint_seconds``.

On CUDA the host runs ahead of the GPU, so a wall-clock reading means something only after
``torch.cuda.synchronize()``. The trainer therefore synchronizes only at sync points: log, eval
and checkpoint iterations, the planned last iteration, and otherwise every ``~SYNC_SECONDS`` of
training (at most ``log_interval`` iterations apart; this bounds how late a signal is noticed).
At a sync point every rank adds its measured time to its clock and one small ``all_reduce(MAX)``
of [elapsed, signal flag, seconds since the last checkpoint, first non-finite iteration] makes all
decisions collective: every rank sees the same elapsed time (rank-local clocks differ by
microseconds; MAX takes the slowest), so all ranks stop at the same iteration and compute the same
learning rate, and no rank can leave a collective the others still wait in.

Between sync points elapsed time is extrapolated from the last sync with the measured seconds per
iteration; the stop iteration is *planned* from that estimate (``it + round(remaining / t_iter)``)
so the job ends within half an iteration of its box instead of overshooting by a whole sync
interval. On CPU every iteration is a sync point (no device queue to drain; the collective
costs well under a millisecond), so both the clock and the learning rate are exact there.

NaN checks use no host sync either: a device tensor records the first iteration whose loss was
non-finite, and it is read (as part of the sync vector) at sync points, so no NaN is missed.

Exactness of resume: in iteration mode (``budget.max_iters``) the schedule depends on the
iteration only, so an interrupted-and-resumed CPU run reproduces the uninterrupted loss curve
exactly. In time-box mode the learning rate follows elapsed training time, which is different in
every run; resume continues the box from the checkpoint's elapsed seconds but is not bit-exact.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Optional

import torch

import models
from ablate import plugins as plugins_mod
from ablate import results
from ablate.atomic import is_disk_full
from ablate.config import load_job_config, to_container
from ablate.data import TrainBatches, ValWindows, final_val_windows, resolve_dataset
from ablate.errors import AblateError, ConfigError, DiskFullError
from ablate.lock import lock_job
from ablate.outcome import EXIT_COMPLETED, EXIT_FAILED, EXIT_PREEMPTED, EXIT_USER_ERROR
from ablate.results import JobDir, MetricsWriter
from ablate.train import checkpoint as ckpt_mod
from ablate.train import distributed as dist_mod
from ablate.train import env as env_mod
from ablate.train import trackers
from ablate.train.compile import CompileResult, compile_model
from ablate.train.device import DeviceSetup, probe_sdpa, setup_device
from ablate.train.optim import Schedule, build_optimizer, describe_groups, grad_accum_for, keep_implementation


SYNC_SECONDS = 5.0  # on CUDA, at most this much training between two sync points
ERROR_CHARS = 2000
RANK_SEED_OFFSET = 1_000_003  # dropout RNG of rank r: seed + r * offset (after model init)
STOP_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGUSR2")


def _tail(text: str, n: int = ERROR_CHARS) -> str:
    return text if len(text) <= n else "..." + text[-(n - 3):]


class _Log:
    """train.log plus stdout, rank 0 only (stdout only when the launcher captures it into train.log)."""

    def __init__(self, path: Optional[Path], enabled: bool):
        self.enabled = enabled
        self._file = open(path, "a", encoding="utf-8") if (enabled and path is not None) else None

    def __call__(self, msg: str) -> None:
        if not self.enabled:
            return
        line = f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {msg}"
        print(line, flush=True)
        if self._file is not None:
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()


class _Stop(Exception):
    """Internal: leave the loop (completed, failed or preempted) with a result already decided."""


class Trainer:
    def __init__(self, job_dir: Path | str, dinfo: dist_mod.DistInfo):
        self.jd = JobDir(Path(job_dir))
        self.dinfo = dinfo
        self.is_main = dinfo.is_main
        self.cfg = None
        self.dev: Optional[DeviceSetup] = None
        self.log = _Log(None, False)
        self.metrics: Optional[MetricsWriter] = None
        self.signal_received: Optional[int] = None
        self._old_handlers: dict = {}
        # counters (restored from a checkpoint)
        self.iter = 0
        self.train_seconds = 0.0
        self.warmup_seconds = 0.0
        self.eval_seconds = 0.0
        self.checkpoint_seconds = 0.0
        self.timed_iters = 0
        self.warmup_end_elapsed: Optional[float] = None
        self.best_val_loss: Optional[float] = None
        self.best_val_iter: Optional[int] = None
        self.final_val_loss: Optional[float] = None
        self.last_train_loss: Optional[float] = None
        self.peak_memory_mb: Optional[float] = None
        self.resumed = 0
        self.gates: dict = {}
        self.optim_record: Optional[dict] = None
        self.notes: list[str] = []
        self._pending_log: list[str] = []
        self.last_eval_iter: Optional[int] = None
        self.plugins: dict = {}
        self.compiled = CompileResult(requested=False, compiled=False)  # set in setup
        self.final_windows = None  # ValWindows of the final eval (set in setup)
        self.gate_shares: dict = {}  # set by the final eval
        self.schedule: Optional[Schedule] = None
        self.final_eval_seconds: Optional[float] = None
        self.causality: dict = results.causality_entry(None)
        self.resumed_this_start = False

    # ------------------------------------------------------------------ summary

    def summary(self, status: str, **extra: Any) -> dict:
        cfg = self.cfg
        tpi = int(cfg.optim.tokens_per_iter) if cfg is not None else None
        ms = tps = mfu = None
        if self.timed_iters > 0 and self.train_seconds > 0 and tpi:
            ms = 1000.0 * self.train_seconds / self.timed_iters
            tps = tpi * self.timed_iters / self.train_seconds
            mfu = self._mfu(tps)
        s = {
            "step": cfg.step.name if cfg is not None else None,
            "architecture": cfg.step.architecture if cfg is not None else None,
            "seed": int(cfg.seed) if cfg is not None else None,
            "status": status,
            "best_val_loss": self.best_val_loss,
            "best_val_iter": self.best_val_iter,
            "final_val_loss": self.final_val_loss,
            "final_val_windows": self.final_windows.n_windows if self.final_windows is not None else None,
            "final_val_tokens": self.final_windows.tokens_per_eval if self.final_windows is not None else None,
            "val_windows": int(cfg.data.val_windows) if cfg is not None else None,
            "final_eval_seconds": self.final_eval_seconds,
            "warmup_end_seconds": (self.warmup_end_elapsed if self.schedule is not None
                                   and not self.schedule.by_iters else None),
            "last_train_loss": self.last_train_loss,
            "iterations": self.iter,
            "max_iters": (int(cfg.budget.max_iters) if cfg is not None and cfg.budget.max_iters else None),
            "box_seconds": (float(cfg.budget.train_seconds) if cfg is not None and cfg.budget.train_seconds else None),
            "tokens_per_iter": tpi,
            "tokens_seen": (self.iter * tpi) if tpi else None,
            "train_seconds": self.train_seconds,
            "eval_seconds": self.eval_seconds,
            "checkpoint_seconds": self.checkpoint_seconds,
            "warmup_seconds": self.warmup_seconds,
            "timed_iters": self.timed_iters,
            "ms_per_iter": ms,
            "tokens_per_s": tps,
            "mfu": mfu,
            "peak_memory_mb": self.peak_memory_mb,
            "world_size": self.dinfo.world_size,
            "device": self.dev.name if self.dev else None,
            "device_count": self._device_count(),
            "precision": self.dev.precision if self.dev else None,
            "autocast_dtype": _dtype_name(self.dev.autocast_dtype) if self.dev else None,
            "optimizer": self.optim_record.get("optimizer") if self.optim_record else None,
            "sdpa_flash": self.dev.sdpa["flash"] if self.dev and self.dev.sdpa else None,
            **self.compiled.record(),
            "resumed": self.resumed,
            "gates": self.gates,
            "gate_shares": self.gate_shares,
            "optim_groups": self._optim_counts(),
            "error": None,
            "failed_iter": None,
            "causality": self.causality,
            "notes": list(self.notes),
            "updated": results.now_iso(),
        }
        s.update(extra)
        return s

    def _device_count(self) -> Optional[int]:
        if self.dev is None:
            return None
        if self.dev.is_cuda:
            return self.dinfo.world_size  # one GPU per rank
        return max(1, self.dinfo.world_size // max(1, self.dinfo.local_world_size))  # CPU: one per node

    def _optim_counts(self) -> Optional[list]:
        if not self.optim_record:
            return None
        out = [{k: g[k] for k in ("name", "weight_decay", "kinds", "tensors", "params")} for g in self.optim_record["groups"]]
        fr = self.optim_record["frozen"]
        out.append({"name": "frozen", "weight_decay": None, "kinds": [], "tensors": fr["tensors"], "params": fr["params"]})
        return out

    def _mfu(self, tokens_per_s: float) -> Optional[float]:
        if self.dev is None or self.flops_per_token is None:
            return None
        peak = self.dev.peak_flops()
        if not peak:
            return None
        return self.flops_per_token * tokens_per_s / (peak * self.dinfo.world_size)

    def write_summary(self, status: str, **extra: Any) -> dict:
        s = self.summary(status, **extra)
        if self.is_main:
            self.jd.write_summary(s)
        return s

    # ------------------------------------------------------------------ setup

    flops_per_token: Optional[float] = None

    def setup(self) -> None:
        cfg = self.cfg = load_job_config(self.jd.config)
        try:
            self.causality = results.causality_entry(results.read_causality_init(self.jd))
        except AblateError as e:  # an unreadable preflight record: the job is reported unchecked
            self.notes.append(f"preflight causality record unreadable ({e}); reported as unchecked")
        b = cfg.budget
        if b.train_seconds is not None and float(b.train_seconds) <= 0:
            raise ConfigError(f"budget.train_seconds={b.train_seconds} must be positive (or null with budget.max_iters)")
        if b.max_iters is not None and int(b.max_iters) <= 0:
            raise ConfigError(f"budget.max_iters={b.max_iters} must be positive (or null)")
        for key in ("eval_interval", "log_interval"):
            if int(getattr(b, key)) < 1:
                raise ConfigError(f"budget.{key}={getattr(b, key)} must be at least 1")
        self.schedule = Schedule(cfg.optim, b.max_iters, b.train_seconds)

        self.dev = dev = setup_device(cfg.hardware, self.dinfo.local_rank)
        self.compiled = CompileResult(requested=bool(cfg.hardware.compile), compiled=False)
        if self.is_main:
            # Under the local launcher our stdout already goes to train.log: do not write it twice.
            captured = os.environ.get(results.LOG_CAPTURED_ENV) == "1"
            self.log = _Log(None if captured else self.jd.log, True)
        dist_mod.init(self.dinfo, dev.device)
        ws, rank = self.dinfo.world_size, self.dinfo.rank
        self.grad_accum = grad_accum_for(int(cfg.optim.tokens_per_iter), int(cfg.model.block_size),
                                         int(cfg.hardware.micro_batch), ws)

        # Data: rank 0 resolves first (it may tokenize into a cache), then the others.
        if self.is_main:
            ds = resolve_dataset(cfg.data, int(cfg.model.vocab_size))
        dist_mod.barrier(self.dinfo)
        if not self.is_main:
            ds = resolve_dataset(cfg.data, int(cfg.model.vocab_size))
        self.dataset = ds
        self.batches = TrainBatches(ds.train_paths, int(cfg.model.block_size), int(cfg.hardware.micro_batch),
                                    self.grad_accum, ws, rank, int(cfg.seed))
        T = int(cfg.model.block_size)
        self.val_batches = ValWindows(ds.val_path, T, int(cfg.data.val_windows),
                                      ws, rank).batches(int(cfg.hardware.micro_batch))
        if dev.is_cuda:
            self.val_batches = [(x.pin_memory(), y.pin_memory()) for x, y in self.val_batches]
        # The final eval: a superset of the periodic windows, sized by data.val_tokens.
        n_final, val_note = final_val_windows(ds.val_path, T, cfg.data.val_tokens, int(cfg.data.val_windows))
        self.final_windows = ValWindows(ds.val_path, T, n_final, ws, rank)
        self.val_fingerprint = self.final_windows.fingerprint() if self.is_main else None
        self.val_note = val_note

        # Model: identical init on every rank; the researcher's own modules first (same as preflight).
        self.plugins = plugins_mod.load_for(cfg)
        seed = int(cfg.seed)
        _seed_all(seed)
        try:
            model = models.build_model(cfg.model)
        except models.ModelConfigError as e:
            raise ConfigError(str(e)) from None
        model.to(dev.device)
        self.raw_model = model
        dev.sdpa = probe_sdpa(dev, int(cfg.model.n_head), int(cfg.model.n_embd) // int(cfg.model.n_head))
        self.flops_per_token = float(model.flops_per_token())
        self.optimizer, self.optim_record = build_optimizer(model, cfg.optim, dev.device.type)
        self.trainable = [p for g in self.optimizer.param_groups for p in g["params"]]

        # Resume, or seed this rank's dropout RNG.
        ck = ckpt_mod.load_checkpoint(self.jd.checkpoint)
        if ck is not None:
            self._restore(ck)
            self.resumed_this_start = True
        else:
            _seed_all(seed + rank * RANK_SEED_OFFSET)
        if self.val_note and self.val_note not in self.notes:
            self.notes.append(self.val_note)

        fwd = model
        if dev.compile:
            t0 = time.perf_counter()
            val0 = self.val_batches[0] if self.val_batches else None
            fwd, self.compiled = compile_model(model, dev.autocast, self.batches.get(self.iter)[0], val0,
                                               dev.device, self.dinfo)
            self.warmup_seconds += time.perf_counter() - t0  # compilation is warm-up, not training
            dev.compile = self.compiled.compiled  # from here on: what really runs
            if self.compiled.error:
                self.notes.append(f"torch.compile failed, ran eager: {self.compiled.error}")
        self.fwd_model = fwd  # eval forward (no DDP wrapper)
        if self.dinfo.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            # Buffers are created identically on every rank (same seed); no per-forward broadcast.
            import inspect

            no_buffer_sync = ({"forward_sync_buffers": False}
                              if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters
                              else {"broadcast_buffers": False})
            self.train_model = DDP(fwd, device_ids=[dev.device.index] if dev.is_cuda else None, **no_buffer_sync)
        else:
            self.train_model = fwd

        # Files (rank 0).
        if self.is_main:
            # From iteration 0 nothing of an earlier start is kept (its batch record would repeat).
            dropped = results.truncate_metrics_after(self.jd.metrics, self.iter if self.iter > 0 else -1)
            if dropped:
                note = f"{len(dropped)} unreadable metrics line(s) dropped on resume (first: {dropped[0]})"
                self.notes.append(note)
                self._pending_log = [f"note: {note}"]
            self.metrics = trackers.open_metrics(cfg, self.jd, MetricsWriter(self.jd.metrics), self.iter,
                                                 self._tracker_warning)
            if self.iter == 0:
                # The data every step of this seed must share, proven per run (the report compares).
                self.metrics.write({"kind": "batch", "iter": 0, "tokens_seen": 0, "train_seconds": 0.0,
                                    "batch_iter": 0, "batch_fingerprint": self.batches.global_fingerprint(0)})
            env = env_mod.collect(dev.name, dev.device.type, ws, dev.precision, extra={
                "device_count": self._device_count(),
                "local_world_size": self.dinfo.local_world_size,
                "backend": self.dinfo.backend,
                "tf32": dev.tf32,
                **self.compiled.record(),
                "autocast_dtype": _dtype_name(dev.autocast_dtype),
                "sdpa": dev.sdpa,
                "grad_accum": self.grad_accum,
                "micro_batch": int(cfg.hardware.micro_batch),
                "tokens_per_iter": int(cfg.optim.tokens_per_iter),
                "num_params": int(model.num_params()),
                "flops_per_token": self.flops_per_token,
                "peak_flops": dev.peak_flops(),
                "dataset": _describe(ds),
                "optim_groups": self.optim_record,
                "resumed": self.resumed,
                "start_iter": self.iter,
                "plugins": self.plugins,
            })
            prev = None
            if self.jd.env.is_file():
                try:
                    prev = results.read_json(self.jd.env)
                except AblateError:
                    prev = None
            if prev is not None:
                history = prev.pop("previous", [])
                env["previous"] = history + [prev]
            results.atomic_write_json(self.jd.env, env)
            self._log_header(model)
        self.write_summary(results.RUNNING)

    def _tracker_warning(self, message: str) -> None:
        self.notes.append(message)
        self.log(f"warning: {message}")

    def _log_header(self, model) -> None:
        cfg, dev = self.cfg, self.dev
        self.log(f"job {self.jd.path} step {cfg.step.name} ({cfg.step.architecture}) seed {cfg.seed}")
        self.log(f"device {dev.name} x{self._device_count()} | world size {self.dinfo.world_size} | precision {dev.precision}"
                 f" (autocast {_dtype_name(dev.autocast_dtype)}) | tf32 {dev.tf32} | compile {dev.compile}"
                 f" | {self.optim_record['optimizer']} | SDPA flash {dev.sdpa['flash'] if dev.sdpa else None}"
                 f" | threads {torch.get_num_threads()}")
        want = int(cfg.hardware.nproc_per_node)
        if want != self.dinfo.local_world_size:
            self.log(f"note: hardware.nproc_per_node={want} but this job runs {self.dinfo.local_world_size} "
                     f"process(es) per node (world size {self.dinfo.world_size}); the global batch is unchanged")
        for w in dev.warnings:
            self.log(f"warning: {w}")
        if dev.sdpa is not None and not dev.sdpa["flash"]:
            self.log(f"warning: attention cannot use the flash SDPA kernel here, a slower one runs: {dev.sdpa['flash_error']}")
        c = self.compiled
        if c.error:
            self.log(f"warning: torch.compile ({c.backend}) failed for step {cfg.step.name}, running eager: {c.error}")
        elif c.compiled:
            self.log(f"compiled ({c.backend}) in {c.seconds:.1f}s: {c.graphs} graph(s), {c.graph_breaks} graph break(s)")
        self.log(f"model {model.num_params():,} params | {self.flops_per_token:.4g} FLOPs/token | "
                 f"batch {cfg.optim.tokens_per_iter} tokens/iter = {cfg.model.block_size} x {cfg.hardware.micro_batch} "
                 f"x {self.dinfo.world_size} ranks x {self.grad_accum} accum")
        self.log(str(_describe(self.dataset)))  # "data <source>: ..."
        for line in describe_groups(self.optim_record):
            self.log(line)
        b = cfg.budget
        self.log(f"budget: box {b.train_seconds}s of training | max_iters {b.max_iters} | "
                 f"schedule (warmup and decay) by {'iterations' if self.schedule.by_iters else 'elapsed training time'}")
        for line in self._pending_log:
            self.log(line)
        if self.resumed:
            self.log(f"resumed from checkpoint at iteration {self.iter} ({self.train_seconds:.1f}s of the box used; "
                     f"resume #{self.resumed})")

    def _restore(self, ck: dict) -> None:
        st = ck["state"]
        self.raw_model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        keep_implementation(self.optimizer, self.optim_record)
        self.iter = int(st["iter"])
        self.train_seconds = float(st["train_seconds"])
        self.warmup_seconds = float(st["warmup_seconds"])
        self.eval_seconds = float(st["eval_seconds"])
        self.checkpoint_seconds = float(st["checkpoint_seconds"])
        self.timed_iters = int(st["timed_iters"])
        self.warmup_end_elapsed = st.get("warmup_end_elapsed")
        self.best_val_loss = st.get("best_val_loss")
        self.best_val_iter = st.get("best_val_iter")
        self.final_val_loss = st.get("final_val_loss")
        self.last_train_loss = st.get("last_train_loss")
        self.peak_memory_mb = st.get("peak_memory_mb")
        self.gates = st.get("gates") or {}
        self.notes = list(st.get("notes") or [])
        saved = st.get("causality")
        if isinstance(saved, dict):
            self.causality["trained"] = saved.get("trained")
            self.causality["resume_checks"] = list(saved.get("resume_checks") or [])
        self.resumed = int(st.get("resumed", 0)) + 1
        rngs = ck.get("rng") or []
        if len(rngs) == self.dinfo.world_size:
            ckpt_mod.restore_rng(rngs[self.dinfo.rank], self.dev.device)
        else:
            _seed_all(int(self.cfg.seed) + self.dinfo.rank * RANK_SEED_OFFSET + self.iter)
            self.notes.append(f"resumed at iteration {self.iter} with world size {self.dinfo.world_size} "
                              f"(checkpoint had {len(rngs)}): dropout RNG reseeded")

    # ------------------------------------------------------------------ signals

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for name in STOP_SIGNALS:
            sig = getattr(signal, name, None)
            if sig is None:
                continue
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame) -> None:  # only sets a flag; the loop acts on it
        self.signal_received = signum

    def _restore_signals(self) -> None:
        for sig, old in self._old_handlers.items():
            try:
                signal.signal(sig, old)
            except (ValueError, TypeError):
                pass
        self._old_handlers.clear()

    # ------------------------------------------------------------------ checkpoint / eval

    def save_checkpoint(self) -> None:
        t0 = time.perf_counter()
        rngs = dist_mod.all_gather_object(ckpt_mod.capture_rng(self.dev.device), self.dinfo)
        if self.is_main:
            state = {
                "iter": self.iter,
                "train_seconds": self.train_seconds,
                "warmup_seconds": self.warmup_seconds,
                "eval_seconds": self.eval_seconds,
                "checkpoint_seconds": self.checkpoint_seconds,
                "timed_iters": self.timed_iters,
                "warmup_end_elapsed": self.warmup_end_elapsed,
                "best_val_loss": self.best_val_loss,
                "best_val_iter": self.best_val_iter,
                "final_val_loss": self.final_val_loss,
                "last_train_loss": self.last_train_loss,
                "peak_memory_mb": self.peak_memory_mb,
                "gates": self.gates,
                "notes": self.notes,
                "causality": self.causality,
                "resumed": self.resumed,
                "world_size": self.dinfo.world_size,
                "seed": int(self.cfg.seed),
                "step": str(self.cfg.step.name),
            }
            ckpt_mod.save_checkpoint(self.jd.checkpoint, {
                "model": self.raw_model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "state": state,
                "rng": rngs,
            })
            if self.metrics is not None:
                self.metrics.sync()
        dist_mod.barrier(self.dinfo)  # nobody runs ahead (or exits) before the file is whole
        dt = time.perf_counter() - t0
        self.checkpoint_seconds += dt
        self.log(f"checkpoint at iteration {self.iter} ({dt:.2f}s)")

    @torch.no_grad()
    def _window_losses(self, batches) -> torch.Tensor:
        """Mean cross-entropy of each of this rank's windows (float64, on the device)."""
        dev = self.dev
        model = self.fwd_model
        model.eval()
        out = []
        for x, y in batches:
            x = x.to(dev.device, non_blocking=True)
            y = y.to(dev.device, non_blocking=True)
            with dev.autocast():
                logits, _ = model(x, y)  # the signature the compile probe compiled for evals
            ce = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1),
                                                   reduction="none")
            out.append(ce.view(x.size(0), -1).double().mean(1))
        model.train()
        return torch.cat(out) if out else torch.zeros(0, device=dev.device, dtype=torch.float64)

    def _gate_shares(self) -> dict:
        """Reciprocal paths' share of their block output (models/gate_shares.py), on rank 0's
        first periodic validation windows: fixed inputs, so runs and steps compare."""
        x, _ = self.val_batches[0]
        with self.dev.autocast():
            return _plain(models.gate_shares(self.raw_model, x.to(self.dev.device)))

    def evaluate(self) -> float:
        """Mean validation loss over the periodic windows (all ranks)."""
        dev = self.dev
        losses = self._window_losses(self.val_batches)
        vec = torch.stack([losses.sum(), torch.tensor(float(losses.numel()), device=dev.device, dtype=torch.float64)])
        dist_mod.all_reduce(vec, "sum", self.dinfo)
        total_all, count_all = vec.tolist()
        if count_all <= 0:
            raise AblateError("no validation windows: raise data.val_windows or check the validation split")
        return total_all / count_all

    def evaluate_final(self) -> list[float]:
        """Every final-eval window's loss, in window order (on every rank)."""
        local = self._window_losses(self.final_windows.batches(int(self.cfg.hardware.micro_batch)))
        parts = dist_mod.all_gather_object(local.cpu().tolist(), self.dinfo)  # ranks hold consecutive windows
        return [v for part in parts for v in part]

    def _eval_and_record(self, final: bool = False) -> None:
        t0 = time.perf_counter()
        full: Optional[list[float]] = None
        if final:
            full = self.evaluate_final()
            k = int(self.cfg.data.val_windows)
            val = sum(full[:k]) / k  # the periodic windows are the first k: one curve, same windows
            full_loss = sum(full) / len(full)
        else:
            val = self.evaluate()
        self.last_eval_iter = self.iter
        if full is not None:
            self.final_val_loss = full_loss
        if math.isfinite(val) and (self.best_val_loss is None or val < self.best_val_loss):
            self.best_val_loss = val
            self.best_val_iter = self.iter
        self.gates = _plain(self.raw_model.gate_stats()) if self.is_main else {}
        if final and self.is_main and self.val_batches:
            self.gate_shares = self._gate_shares()
        if self.is_main:
            tokens = self.iter * int(self.cfg.optim.tokens_per_iter)
            rec = {
                "kind": "eval",
                "iter": self.iter,
                "tokens_seen": tokens,
                "train_seconds": self.train_seconds,
                "flops": self.flops_per_token * tokens if self.flops_per_token is not None else None,
                "loss/val": val,
                "loss/val_best": self.best_val_loss,
            }
            if self.iter > 0:  # the global batch of the last iteration trained
                rec["batch_iter"] = self.iter - 1
                rec["batch_fingerprint"] = self.batches.global_fingerprint(self.iter - 1)
            if full is not None:
                rec["loss/val_full"] = full_loss
                rec["val_full_windows"] = len(full)
                results.write_final_eval(
                    self.jd.final_eval, loss=full_loss, window_losses=full,
                    block_size=int(self.cfg.model.block_size), fingerprint=self.val_fingerprint,
                    iteration=self.iter, tokens_seen=tokens, train_seconds=self.train_seconds,
                    periodic_windows=int(self.cfg.data.val_windows), val_path=self.final_windows.path)
            for key, per_layer in self.gates.items():
                for layer, value in enumerate(per_layer):
                    rec[f"gates/{layer}/{key}"] = value
            self.metrics.write(rec)
            self.write_summary(results.RUNNING)
        dt = time.perf_counter() - t0
        self.eval_seconds += dt
        if final:
            self.final_eval_seconds = dt
            self.log(f"final eval on {len(full)} windows ({self.final_windows.tokens_per_eval:,} tokens): "
                     f"val loss {full_loss:.4f} ({dt:.1f}s)")
        self.log(f"eval iter {self.iter}: val loss {val:.4f} (best {self.best_val_loss:.4f} at {self.best_val_iter})"
                 if self.best_val_loss is not None else f"eval iter {self.iter}: val loss {val}")

    # ------------------------------------------------------------------ the loop

    def train(self) -> dict:
        cfg, dev, dinfo = self.cfg, self.dev, self.dinfo
        b = cfg.budget
        box = float(b.train_seconds) if b.train_seconds else None
        max_iters = int(b.max_iters) if b.max_iters else None
        log_every, eval_every = int(b.log_interval), int(b.eval_interval)
        ck_iters = int(b.checkpoint_interval_iters) if b.checkpoint_interval_iters else None
        ck_secs = float(b.checkpoint_interval_seconds) if b.checkpoint_interval_seconds else None
        clip = float(cfg.optim.grad_clip)
        n_micro = self.grad_accum
        sync_every_iter = _sync_every_iter(dev)
        model, opt, sched = self.train_model, self.optimizer, self.schedule
        ddp = dinfo.enabled
        device = dev.device
        non_blocking = dev.is_cuda

        if self.resumed_this_start and not self._recheck_causality("resume"):
            return self._leaked("resume")
        if max_iters is not None and self.iter >= max_iters:
            return self._complete()
        if box is not None and self.train_seconds >= box:
            return self._complete()

        # State kept on the device; read only at sync points.
        first_bad = torch.zeros((), dtype=torch.int64, device=device)
        it_dev = torch.full((), self.iter, dtype=torch.int64, device=device)
        grad_norm = None
        loss_iter = None

        t_iter = None  # seconds per training iteration (collective estimate)
        sync_iter, sync_elapsed = self.iter, self.train_seconds
        next_sync = self.iter + 1
        box_stop: Optional[int] = None
        log_elapsed, log_timed = self.train_seconds, self.timed_iters
        first = True
        seg_start = time.perf_counter()  # start of the warm-up iteration
        seg_timed_from = self.iter
        last_ckpt_wall = time.perf_counter()
        self._install_signals()

        while True:
            it = self.iter
            # ---- learning rate from the collective clock (extrapolated between sync points)
            est = sync_elapsed + (it - sync_iter) * (t_iter or 0.0)
            if box is not None:
                est = min(est, box)
            if self.warmup_end_elapsed is None:
                # One clock: in a time box the warmup becomes training time once the rate is known.
                self.warmup_end_elapsed = sched.warmup_time(t_iter, it, est)
                if (self.warmup_end_elapsed is not None and box is not None and not sched.by_iters
                        and self.warmup_end_elapsed >= box and sched.warmup > 0):
                    msg = (f"box too short for its warmup: {sched.warmup} warmup iterations at the measured "
                           f"{t_iter:.3g} s/iteration take {sched.warmup * (t_iter or 0):.1f} s of a {box:.0f} s box; "
                           "the learning rate never reaches its peak (lower optim.warmup_iters, set "
                           "optim.warmup_fraction, or give the box more time)")
                    self.notes.append(msg)
                    self.log(f"warning: {msg}")
            lr = sched(it, est, self.warmup_end_elapsed)
            for g in opt.param_groups:
                g["lr"] = lr

            # ---- one optimizer step over n_micro micro-batches
            micro = self.batches.get(it)
            loss_iter = None
            for k, (x, y) in enumerate(micro):
                if non_blocking:
                    x = x.pin_memory().to(device, non_blocking=True)
                    y = y.pin_memory().to(device, non_blocking=True)
                ctx = model.no_sync() if (ddp and k < n_micro - 1) else contextlib.nullcontext()
                with ctx:
                    with dev.autocast():
                        _, loss = model(x, y)
                    loss = loss / n_micro
                    loss.backward()
                ld = loss.detach()
                loss_iter = ld if loss_iter is None else loss_iter + ld
            if clip > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            self.iter = it = it + 1
            it_dev += 1
            first_bad = torch.where((first_bad == 0) & ~torch.isfinite(loss_iter), it_dev, first_bad)

            # ---- sync point?
            planned_end = (max_iters is not None and it >= max_iters) or (box_stop is not None and it >= box_stop)
            is_log = it % log_every == 0
            is_eval = it % eval_every == 0
            is_ck_iter = ck_iters is not None and it % ck_iters == 0
            if not (first or sync_every_iter or planned_end or is_log or is_eval or is_ck_iter or it >= next_sync):
                continue

            dev.synchronize()
            now = time.perf_counter()
            if first:
                self.warmup_seconds += now - seg_start
            else:
                self.train_seconds += now - seg_start
                self.timed_iters += it - seg_timed_from
            vec = torch.tensor(
                [self.train_seconds, float(self.signal_received or 0), now - last_ckpt_wall, 0.0],
                dtype=torch.float64, device=device,
            )
            vec[3] = first_bad.to(torch.float64)
            dist_mod.all_reduce(vec, "max", dinfo)
            elapsed, sig, since_ckpt, bad = vec.tolist()
            # Collective clock: every rank now holds the same elapsed time.
            if not first and it > sync_iter:
                # Seconds per iteration since the last sync point (collective values only, so every
                # rank computes the same estimate). CPU syncs every iteration: smooth the noise.
                dt_iter = (elapsed - sync_elapsed) / (it - sync_iter)
                if t_iter is None or not sync_every_iter:
                    t_iter = dt_iter
                else:
                    t_iter = 0.8 * t_iter + 0.2 * dt_iter
            self.train_seconds = elapsed
            sync_iter, sync_elapsed = it, elapsed

            # ---- non-finite loss: fail (no checkpoint of a broken model)
            if bad > 0:
                bad_iter = int(bad)
                loss_val = self._reduce_loss(loss_iter)
                self.last_train_loss = loss_val
                if is_log:
                    self._log_train(it, loss_val, lr, grad_norm, log_elapsed, log_timed, box, max_iters)
                msg = (f"non-finite training loss at iteration {bad_iter} (loss {loss_val} at iteration {it}); "
                       f"the run diverged: lower optim.lr (now {cfg.optim.lr}) or check the data")
                self.log(f"FAILED: {msg}")
                self.result = self.write_summary(results.FAILED, error=msg, failed_iter=bad_iter,
                                                 exit_code=EXIT_FAILED)
                raise _Stop()

            # ---- stop planning for the time box
            if box is not None:
                remaining = box - elapsed
                if t_iter and t_iter > 0:
                    left = int(math.floor(remaining / t_iter + 0.5))
                    box_stop = it + max(0, left)
                elif remaining <= 0:
                    box_stop = it
            end = (max_iters is not None and it >= max_iters) or (box_stop is not None and it >= box_stop)

            # ---- log
            if is_log or end:
                loss_val = self._reduce_loss(loss_iter)
                self.last_train_loss = loss_val
                if dev.is_cuda:
                    pm = dev.peak_memory_mb()
                    self.peak_memory_mb = max(self.peak_memory_mb or 0.0, pm) if pm is not None else None
                if self.is_main:
                    self._log_train(it, loss_val, lr, grad_norm, log_elapsed, log_timed, box, max_iters)
                log_elapsed, log_timed = self.train_seconds, self.timed_iters

            # ---- eval, checkpoint, signal (all excluded from the box)
            if is_eval or end:
                self._eval_and_record(final=end)
            if sig > 0 and not end:
                self.save_checkpoint()
                name = _signal_name(int(sig))
                self.notes.append(f"stopped by {name} at iteration {it}; checkpointed, resumable")
                self.log(f"{name} received: checkpointed at iteration {it}; exiting with code {EXIT_PREEMPTED} "
                         f"(start the job again to resume)")
                self.result = self.write_summary(results.RUNNING, stopped_by=name, exit_code=EXIT_PREEMPTED)
                raise _Stop()
            if not end and (is_ck_iter or (ck_secs is not None and since_ckpt >= ck_secs)):
                self.save_checkpoint()
                last_ckpt_wall = time.perf_counter()
                if self.is_main:
                    self.write_summary(results.RUNNING)
            if end:
                break

            # ---- next sync point
            if sync_every_iter or t_iter is None:
                next_sync = it + 1
            else:
                n = int(max(1, min(log_every, SYNC_SECONDS // max(t_iter, 1e-9))))
                next_sync = it + n
            first = False
            dev.synchronize()  # evals/checkpoints queued nothing, but be exact about the segment start
            seg_start = time.perf_counter()
            seg_timed_from = it

        return self._complete()

    def _reduce_loss(self, loss_iter: torch.Tensor) -> float:
        v = loss_iter.detach().to(torch.float64).clone()
        dist_mod.all_reduce(v, "sum", self.dinfo)
        return v.item() / self.dinfo.world_size

    def _log_train(self, it, loss_val, lr, grad_norm, log_elapsed, log_timed, box, max_iters) -> None:
        if not self.is_main:
            return
        tpi = int(self.cfg.optim.tokens_per_iter)
        d_t = self.train_seconds - log_elapsed
        d_n = self.timed_iters - log_timed
        ms = 1000.0 * d_t / d_n if d_n > 0 and d_t > 0 else None
        tps = tpi * d_n / d_t if d_n > 0 and d_t > 0 else None
        mfu = self._mfu(tps) if tps else None
        gn = float(grad_norm.item()) if grad_norm is not None else None
        rec = {
            "kind": "train",
            "iter": it,
            "tokens_seen": it * tpi,
            "train_seconds": self.train_seconds,
            "loss/train": loss_val,
            "lr": lr,
            "grad_norm": gn,
            "time/ms_per_iter": ms,
            "throughput/tokens_per_s": tps,
            "throughput/mfu": mfu,
            "memory/peak_mb": self.dev.peak_memory_mb(),
        }
        self.metrics.write(rec)
        total = f"/{max_iters}" if max_iters else ""
        parts = [f"iter {it}{total}", f"loss {loss_val:.4f}", f"lr {lr:.3e}"]
        parts.append(f"{ms:.1f} ms/iter" if ms is not None else "- ms/iter (warm-up)")
        parts.append(f"{tps:,.0f} tok/s" if tps is not None else "- tok/s")
        if mfu is not None:
            parts.append(f"mfu {100 * mfu:.1f}%")
        if box is not None:
            parts.append(f"box {self.train_seconds:.1f}s/{box:.0f}s ({max(0.0, box - self.train_seconds):.1f}s left)")
        else:
            parts.append(f"train {self.train_seconds:.1f}s")
        self.log(" | ".join(parts))

    # ------------------------------------------------------------------ the end

    def _complete(self) -> dict:
        if self.last_eval_iter != self.iter or self.final_val_loss is None:
            self._eval_and_record(final=True)
        # The measured result goes to disk first; nothing after this may lose it.
        result = self.write_summary(results.COMPLETED, exit_code=EXIT_COMPLETED)
        if not self._recheck_causality("final"):
            return self._leaked("final")
        result = self.write_summary(results.COMPLETED, exit_code=EXIT_COMPLETED)
        try:
            self._final_report(result)
        except Exception as e:  # a report line must never turn a measured run into a failed one
            note = f"post-training step failed after the result was saved: {type(e).__name__}: {e}"
            try:
                self.notes.append(_tail(note, 500))
                result = self.write_summary(results.COMPLETED, exit_code=EXIT_COMPLETED,
                                            post_training_error=_tail(traceback.format_exc()))
                self.log(f"warning: {note}")
            except Exception:
                pass
        self._keep_model_and_mark_done()
        return result

    def _keep_model_and_mark_done(self) -> None:
        """What budget.keep says a DONE job keeps of its model, then DONE (all ranks call this)."""
        keep = str(self.cfg.budget.keep)
        if keep not in ckpt_mod.KEEP_CHOICES:  # the preflight refuses it; never delete on a typo
            keep = "checkpoint"
        if keep == "checkpoint":
            self.save_checkpoint()  # all ranks: the full state at the end, not the last periodic one
        if self.is_main and keep in ("weights", "checkpoint"):
            # Before DONE: a DONE job has its weights. A failure here loses nothing measured.
            try:
                ckpt_mod.save_final_weights(self.jd.weights, self.raw_model, to_container(self.cfg.model))
            except Exception as e:
                keep = "checkpoint"  # the weights are still in checkpoint.pt
                self.log(f"warning: final weights not written ({type(e).__name__}: {e}); checkpoint.pt kept")
        if self.is_main:
            self.jd.mark_done()
            if keep != "checkpoint":
                # Optimizer state is only for resume, and a DONE job is never resumed.
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.jd.checkpoint)
        dist_mod.barrier(self.dinfo)

    # ------------------------------------------------------------------ causality of the trained weights

    def _recheck_causality(self, when: str) -> bool:
        """Probe the trained weights (models.check_causal, given weights only, the job's precision
        and fp32) on rank 0, outside the time box; every rank learns the verdict. A check that
        cannot run is recorded with ``ok: null`` and does not stop the job (the report then says
        the trained weights are unchecked)."""
        leaked = torch.zeros(1, dtype=torch.float64, device=self.dev.device)
        if self.is_main:
            t0 = time.perf_counter()
            try:
                precisions = ["fp32"] + (["bf16"] if self.dev.precision == "bf16" else [])
                report = models.check_causal(self.raw_model, seed=int(self.cfg.seed), randomize=False,
                                             precisions=precisions)
                record = report.to_record()
                if not report.ok:
                    leaked.fill_(1.0)
            except Exception as e:  # a bug in the check must not turn a measured run into a failed one
                record = {"ok": None, "method": None, "shapes": [], "positions": [], "max_leak": None,
                          "seconds": round(time.perf_counter() - t0, 3),
                          "message": f"the check could not run: {type(e).__name__}: {e}"}
                self.notes.append(_tail(f"causality recheck ({when}) could not run: {type(e).__name__}: {e}", 500))
            record.update(weights="trained", when=when, iteration=self.iter)
            self.causality["trained"] = record
            if when == "resume":
                self.causality["resume_checks"].append(record)
            self.log(f"causality recheck of the trained weights ({when}, iteration {self.iter}): "
                     f"{record['message']} [{record['seconds']:.1f}s, not counted in the box]")
        dist_mod.all_reduce(leaked, "max", self.dinfo)
        return float(leaked.item()) == 0.0

    def _leaked(self, when: str) -> dict:
        """The trained weights see the future: the run is kept on disk but marked leaked (and DONE,
        since training it again would leak again)."""
        msg = (f"the trained weights failed the causality recheck ({when}, iteration {self.iter}): "
               f"{(self.causality.get('trained') or {}).get('message', '')}")
        self.log(f"LEAKED: {msg}")
        self.notes.append(_tail(msg, 500))
        self.result = self.write_summary(results.LEAKED, error=msg, exit_code=EXIT_FAILED)
        self._keep_model_and_mark_done()  # the leaking weights stay inspectable, as budget.keep says
        return self.result

    def _final_report(self, s: dict) -> None:
        if not self.is_main:
            return
        fmt = lambda v, f: ("-" if v is None else format(v, f))  # noqa: E731
        self.log(
            f"done: {s['iterations']} iterations, {s['tokens_seen']:,} tokens, train {s['train_seconds']:.1f}s "
            f"(+ warm-up {s['warmup_seconds']:.1f}s, eval {s['eval_seconds']:.1f}s, checkpoint {s['checkpoint_seconds']:.1f}s)"
        )
        self.log(
            f"final val loss (full set, {s['final_val_tokens']} tokens) {fmt(s['final_val_loss'], '.4f')} | best "
            f"periodic {fmt(s['best_val_loss'], '.4f')} at iteration {s['best_val_iter']} | {fmt(s['ms_per_iter'], '.1f')} ms/iter | "
            f"{fmt(s['tokens_per_s'], ',.0f')} tok/s | mfu {fmt(s['mfu'], '.3f')}"
        )

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
            self._record_failure(_tail(traceback.format_exc()), exit_code=EXIT_FAILED)
            raise
        finally:
            self._restore_signals()
            if self.metrics is not None:
                self.metrics.close()
            self.log.close()
            dist_mod.shutdown(self.dinfo)

    def _record_failure(self, error: str, exit_code: int) -> None:
        if not self.is_main:
            return
        try:
            self.log(f"FAILED at iteration {self.iter}: {error.strip().splitlines()[-1] if error.strip() else error}")
        except Exception:
            pass
        try:
            if self.jd.path.is_dir():
                self.write_summary(results.FAILED, error=error, failed_iter=self.iter, exit_code=exit_code)
        except Exception:
            pass


def _describe(ds) -> Any:
    try:
        return ds.describe()
    except Exception as e:  # a description is informative only
        return f"<describe failed: {type(e).__name__}>"


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (int, float, str)):
        return obj.item()
    return obj


def _sync_every_iter(dev: DeviceSetup) -> bool:
    """Sync at every iteration (CPU default) or only at sync points (CUDA default).

    ``ABLATE_TRAIN_SYNC=every|sparse`` overrides the default; the tests use ``sparse`` to run the
    CUDA bookkeeping (planned stop, sparse collective checks) on CPU.
    """
    mode = os.environ.get("ABLATE_TRAIN_SYNC", "auto").strip().lower()
    if mode == "every":
        return True
    if mode == "sparse":
        return False
    if mode not in ("", "auto"):
        raise ConfigError(f"ABLATE_TRAIN_SYNC={mode!r} is not one of auto, every, sparse")
    return not dev.is_cuda


def _dtype_name(dtype: Optional[torch.dtype]) -> Optional[str]:
    return None if dtype is None else str(dtype).removeprefix("torch.")


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _seed_all(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def run_job(job_dir: str | Path, *, rank: Optional[int] = None, world_size: Optional[int] = None,
            local_rank: Optional[int] = None) -> dict:
    """Train the job in ``job_dir`` (or resume it from its checkpoint) and return its summary.

    The returned dict is what summary.json holds plus ``exit_code``: 0 completed, 1 failed
    (non-finite loss), 3 stopped by a signal after checkpointing (resumable). A job directory
    with DONE is not retrained (exit_code 0, ``already_done`` true). Exceptions are recorded in
    summary.json (status failed, traceback tail) and then re-raised: an AblateError means a user
    mistake (exit code 2 at the command line), anything else a failure (exit code 1).
    """
    jd = JobDir(Path(job_dir))
    dinfo = dist_mod.resolve(rank, world_size, local_rank)
    if not jd.path.is_dir():
        raise ConfigError(f"{jd.path}: no such job directory")
    # One process per job directory: rank 0 holds its lock for the whole job (the other ranks
    # write nothing). A second trainer of the same job, from a second runner, a resume or by hand,
    # is refused here before it reads or writes anything.
    lock = None
    if dinfo.is_main and not jd.is_done():
        lock = lock_job(jd.path)
    try:
        return _run_locked(jd, dinfo)
    finally:
        if lock is not None:
            lock.release()


def _run_locked(jd: JobDir, dinfo: dist_mod.DistInfo) -> dict:
    if jd.is_done():  # checked again under the lock: a DONE job is never retrained or rewritten
        if dinfo.is_main:
            print(f"{jd.path}: already complete (DONE exists); not retraining", flush=True)
        summary = jd.read_summary() or {}
        summary.update(exit_code=EXIT_COMPLETED, already_done=True)
        return summary
    try:
        summary = jd.read_summary() if jd.summary.is_file() else None
    except AblateError:  # a damaged summary is rewritten by the run; it must not block a resume
        summary = None
    if summary and summary.get("status") == results.COMPLETED:
        # Died between the completed summary and DONE: the result is measured; never retrain it.
        if dinfo.is_main:
            print(f"{jd.path}: summary.json says completed; writing the missing DONE marker", flush=True)
            jd.mark_done()
        summary.update(exit_code=EXIT_COMPLETED, already_done=True)
        return summary
    return Trainer(jd.path, dinfo).run()


def main(argv: Optional[list[str]] = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m ablate.train",
        description="Train one job directory (config.yaml inside). Exit codes: 0 completed, 1 failed, "
                    "2 user error, 3 stopped by a signal after checkpointing (run again to resume).",
    )
    parser.add_argument("job_dir", help="job directory holding config.yaml")
    args = parser.parse_args(argv)
    try:
        summary = run_job(args.job_dir)
    except DiskFullError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("error: interrupted; run the same command again to resume from the last checkpoint",
              file=sys.stderr, flush=True)
        return EXIT_PREEMPTED
    except AblateError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    except Exception:
        traceback.print_exc()
        return EXIT_FAILED
    return int(summary.get("exit_code", EXIT_COMPLETED))
