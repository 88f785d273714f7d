"""What a job writes about itself: train.log lines, metrics rows, final_eval.json, summary.json.

``Recorder`` writes them (rank 0 only) from the run's counters (``RunState``), the facts fixed at
setup (``RunFacts``) and the results it is handed; it never sees the trainer. The trainer decides
when (at sync points). Throughput and MFU are computed in one place, ``Recorder.throughput``.
env.json and train.log's first lines are in ``header``; train.log's writer and its last lines in
``trainlog``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from ablate import results
from ablate.config import RunConfig
from ablate.data import Dataset, ValWindows
from ablate.results import JobDir
from ablate.train import distributed as dist_mod
from ablate.train.box import Box
from ablate.train.compile import CompileResult
from ablate.train.device import DeviceSetup
from ablate.train.evals import FinalEval
from ablate.train.optim import Schedule
from ablate.train.state import RunState
from ablate.train.trainlog import TrainLog, dtype_name


class MetricsSink(Protocol):
    """metrics.jsonl's writer, or the writer plus an experiment tracker (train.trackers)."""

    def write(self, row: dict[str, Any]) -> None: ...
    def sync(self) -> None: ...
    def close(self) -> None: ...


@dataclass
class RunFacts:
    """What setup found out about the run and what never changes after: each field is set once,
    in setup's order (a failure during setup is recorded with the ones known by then)."""

    world_size: int
    local_world_size: int
    cfg: RunConfig | None = None
    box: Box | None = None
    schedule: Schedule | None = None
    device: DeviceSetup | None = None
    compiled: CompileResult | None = None  # set once, with the forward: see compile_result
    rank_hosts: list[tuple[str, str | None]] = field(default_factory=list)
    """(hostname, address) by rank: env.json, and the host of a lost rank."""
    grad_accum: int | None = None
    dataset: Dataset | None = None
    final_windows: ValWindows | None = None
    """The final eval's windows (a superset of the periodic ones, sized by data.val_tokens)."""
    val_fingerprint: str | None = None
    """The final eval windows' fingerprint (rank 0 only)."""
    plugins: dict[str, Any] = field(default_factory=dict)
    num_params: int | None = None
    flops_per_token: float | None = None
    optim_record: dict[str, Any] | None = None
    """The AdamW groups built (train.optim.build_optimizer)."""

    def compile_result(self) -> CompileResult:
        """What runs: ``compiled``, or before the forward is built the request (eager)."""
        requested = self.cfg is not None and self.cfg.hardware.compile
        return self.compiled or CompileResult(requested, compiled=False)

    def device_count(self) -> int | None:
        if self.device is None:
            return None
        if self.device.is_cuda:
            return self.world_size  # one GPU per rank
        return max(1, self.world_size // max(1, self.local_world_size))  # CPU: one per node


@dataclass
class Throughput:
    ms_per_iter: float | None = None
    tokens_per_s: float | None = None
    mfu: float | None = None


class Recorder:
    """Writes train rows, eval rows, final_eval.json and summary.json (rank 0; every rank builds
    the same summary). Also holds what only this process start knows: the final eval's seconds,
    the gate shares it is handed, where summary.json's ``causality`` comes from (open_causality)."""

    def __init__(
        self, jd: JobDir, dinfo: dist_mod.DistInfo, state: RunState, facts: RunFacts
    ) -> None:
        self.jd = jd
        self.is_main = dinfo.is_main
        self.state = state
        self.facts = facts
        self.log = TrainLog(None, False)  # train.log: opened by open_log at setup
        self.metrics: MetricsSink | None = None  # metrics.jsonl: opened by open_metrics
        self._causality: Callable[[], dict[str, Any]] = lambda: results.causality_entry(None)
        self.final_eval_seconds: float | None = None
        self.gate_shares: dict[str, Any] = {}
        self._since_log = (state.train_seconds, state.timed_iters)

    def open_log(self, stdout_captured: bool) -> None:
        """Rank 0: train.log (not written twice when the launcher captures stdout into it)."""
        if self.is_main:
            self.log = TrainLog(None if stdout_captured else self.jd.log, True)

    def open_metrics(self, sink: MetricsSink) -> None:
        self.metrics = sink

    def open_causality(self, section: Callable[[], dict[str, Any]]) -> None:
        """summary.json's ``causality`` section: ``section()``, called at each write."""
        self._causality = section

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
        self.log.close()

    def warn(self, message: str) -> None:
        """A warning kept in summary.json's notes and written to train.log."""
        self.state.notes.append(message)
        self.log(f"warning: {message}")

    # ------------------------------------------------------------------ throughput

    def throughput(self, iters: int, seconds: float) -> Throughput:
        """ms/iter, tokens/s and MFU of ``iters`` training iterations in ``seconds`` (all ranks)."""
        f = self.facts
        tpi = f.cfg.optim.tokens_per_iter if f.cfg is not None else 0
        if iters <= 0 or seconds <= 0 or not tpi:
            return Throughput()
        tps = tpi * iters / seconds
        mfu = None
        peak = (
            f.device.peak_flops()
            if f.device is not None and f.flops_per_token is not None
            else None
        )
        if peak and f.flops_per_token is not None:
            mfu = f.flops_per_token * tps / (peak * f.world_size)
        return Throughput(1000.0 * seconds / iters, tps, mfu)

    # ------------------------------------------------------------------ metrics rows

    def write_batch_record(self, fingerprint: str) -> None:
        """Iteration 0's row: the data every step of this seed must share (the report compares)."""
        assert self.metrics is not None
        self.metrics.write(
            {
                "kind": "batch",
                "iter": 0,
                "tokens_seen": 0,
                "train_seconds": 0.0,
                "batch_iter": 0,
                "batch_fingerprint": fingerprint,
            }
        )

    def log_point(self) -> None:
        """Throughput of the next train row counts from here."""
        self._since_log = (self.state.train_seconds, self.state.timed_iters)

    def write_train(self, it: int, loss: float, lr: float, grad_norm: torch.Tensor | None) -> None:
        """Rank 0: the metrics row and the train.log line of a log iteration."""
        if self.is_main:
            assert self.metrics is not None
            row = self.train_row(it, loss, lr, grad_norm)
            self.metrics.write(row)
            self.log(self.train_line(row))

    def train_row(
        self, it: int, loss: float, lr: float, grad_norm: torch.Tensor | None
    ) -> dict[str, Any]:
        """The metrics.jsonl row of a log iteration; throughput since the last log point."""
        st, f, since = self.state, self.facts, self._since_log
        assert f.cfg is not None and f.device is not None
        rate = self.throughput(st.timed_iters - since[1], st.train_seconds - since[0])
        return {
            "kind": "train",
            "iter": it,
            "tokens_seen": it * f.cfg.optim.tokens_per_iter,
            "train_seconds": st.train_seconds,
            "loss/train": loss,
            "lr": lr,
            "grad_norm": float(grad_norm.item()) if grad_norm is not None else None,
            "time/ms_per_iter": rate.ms_per_iter,
            "throughput/tokens_per_s": rate.tokens_per_s,
            "throughput/mfu": rate.mfu,
            "memory/peak_mb": f.device.peak_memory_mb(),
        }

    def train_line(self, row: dict[str, Any]) -> str:
        """The train.log line of a metrics row."""
        box, st = self.facts.box, self.state
        assert box is not None
        ms, tps, mfu = (
            row["time/ms_per_iter"],
            row["throughput/tokens_per_s"],
            row["throughput/mfu"],
        )
        parts = [
            f"iter {row['iter']}" + (f"/{box.max_iters}" if box.max_iters else ""),
            f"loss {row['loss/train']:.4f}",
            f"lr {row['lr']:.3e}",
        ]
        parts.append(f"{ms:.1f} ms/iter" if ms is not None else "- ms/iter (warm-up)")
        parts.append(f"{tps:,.0f} tok/s" if tps is not None else "- tok/s")
        if mfu is not None:
            parts.append(f"mfu {100 * mfu:.1f}%")
        if box.seconds:
            secs = box.seconds
            parts.append(
                f"box {st.train_seconds:.1f}s/{secs:.0f}s ({max(0.0, secs - st.train_seconds):.1f}s left)"
            )
        else:
            parts.append(f"train {st.train_seconds:.1f}s")
        return " | ".join(parts)

    def write_eval(
        self,
        val: float,
        final: FinalEval | None,
        batch_fingerprint: str | None,
        gate_shares: dict[str, Any] | None = None,
    ) -> None:
        """Rank 0: final_eval.json (the final eval), the eval row, then summary.json."""
        if not self.is_main:
            return
        if gate_shares is not None:
            self.gate_shares = gate_shares
        st, f = self.state, self.facts
        assert f.cfg is not None and self.metrics is not None
        tokens = st.iter * f.cfg.optim.tokens_per_iter
        rec: dict[str, Any] = {
            "kind": "eval",
            "iter": st.iter,
            "tokens_seen": tokens,
            "train_seconds": st.train_seconds,
            "flops": f.flops_per_token * tokens if f.flops_per_token is not None else None,
            "loss/val": val,
            "loss/val_best": st.best_val_loss,
        }
        if batch_fingerprint is not None:  # the global batch of the last iteration trained
            rec["batch_iter"] = st.iter - 1
            rec["batch_fingerprint"] = batch_fingerprint
        if final is not None:
            assert f.final_windows is not None
            rec["loss/val_full"] = final.loss
            rec["val_full_windows"] = len(final.window_losses)
            results.write_final_eval(
                self.jd.final_eval,
                loss=final.loss,
                window_losses=final.window_losses,
                block_size=f.cfg.model.block_size,
                fingerprint=f.val_fingerprint,
                iteration=st.iter,
                tokens_seen=tokens,
                train_seconds=st.train_seconds,
                periodic_windows=f.cfg.data.val_windows,
                val_path=f.final_windows.path,
            )
        for key, per_layer in st.gates.items():
            for layer, value in enumerate(per_layer):
                rec[f"gates/{layer}/{key}"] = value
        self.metrics.write(rec)
        self.write_summary(results.RUNNING)

    def eval_done(self, val: float, final: FinalEval | None, seconds: float) -> None:
        """train.log's lines of an eval that took ``seconds`` (all ranks call; rank 0 writes)."""
        st = self.state
        if final is not None:
            assert self.facts.final_windows is not None
            self.final_eval_seconds = seconds
            self.log(
                f"final eval on {len(final.window_losses)} windows "
                f"({self.facts.final_windows.tokens_per_eval:,} tokens): "
                f"val loss {final.loss:.4f} ({seconds:.1f}s)"
            )
        self.log(
            f"eval iter {st.iter}: val loss {val:.4f} (best {st.best_val_loss:.4f} at {st.best_val_iter})"
            if st.best_val_loss is not None
            else f"eval iter {st.iter}: val loss {val}"
        )

    # ------------------------------------------------------------------ summary.json

    def summary(
        self,
        status: str,
        *,
        error: str | None = None,
        failed_iter: int | None = None,
        exit_code: int | None = None,
        stopped_by: str | None = None,
        post_training_error: str | None = None,
    ) -> results.JobSummary:
        """summary.json's content as a ``results.JobSummary`` (the one definition of its keys: a
        key it does not have is a TypeError here, not a silent extra key in the file)."""
        f, st, dev, cfg = self.facts, self.state, self.facts.device, self.facts.cfg
        tpi = cfg.optim.tokens_per_iter if cfg is not None else None
        rate = self.throughput(st.timed_iters, st.train_seconds)
        fw, sched, ds, box, c = f.final_windows, f.schedule, f.dataset, f.box, f.compile_result()
        tokens = st.iter * tpi if tpi is not None else None
        return results.JobSummary(
            step=cfg.step.name if cfg is not None else None,
            architecture=cfg.step.architecture if cfg is not None else None,
            seed=cfg.seed if cfg is not None else None,
            status=status,
            best_val_loss=st.best_val_loss,
            best_val_iter=st.best_val_iter,
            final_val_loss=st.final_val_loss,
            final_val_windows=fw.n_windows if fw is not None else None,
            final_val_tokens=fw.tokens_per_eval if fw is not None else None,
            val_windows=cfg.data.val_windows if cfg is not None else None,
            final_eval_seconds=self.final_eval_seconds,
            warmup_end_seconds=(sched.warmup if sched is not None and not sched.by_iters else None),
            schedule=sched.record() if sched is not None else None,
            schedule_fraction=sched.fraction(st.iter, st.train_seconds) if sched else None,
            epochs=tokens / ds.train_tokens if ds is not None and tokens is not None else None,
            box_overrun_seconds=box.overrun(st.train_seconds) if box is not None else None,
            # the final eval's windows (final_eval.json's val_fingerprint) next to the split's record
            data={**ds.record(), "val_fingerprint": f.val_fingerprint} if ds is not None else None,
            last_train_loss=st.last_train_loss,
            iterations=st.iter,
            max_iters=box.max_iters if box is not None else None,
            box_seconds=box.seconds if box is not None else None,
            tokens_per_iter=tpi,
            tokens_seen=(st.iter * tpi) if tpi else None,
            train_seconds=st.train_seconds,
            eval_seconds=st.eval_seconds,
            checkpoint_seconds=st.checkpoint_seconds,
            warmup_seconds=st.warmup_seconds,
            audit_seconds=st.audit_seconds,
            audit_share=st.audit_seconds / st.train_seconds if st.train_seconds > 0 else None,
            timed_iters=st.timed_iters,
            ms_per_iter=rate.ms_per_iter,
            tokens_per_s=rate.tokens_per_s,
            mfu=rate.mfu,
            peak_memory_mb=st.peak_memory_mb,
            world_size=f.world_size,
            device=dev.name if dev else None,
            device_count=f.device_count(),
            precision=dev.precision if dev else None,
            autocast_dtype=dtype_name(dev.autocast_dtype) if dev else None,
            optimizer=f.optim_record.get("optimizer") if f.optim_record else None,
            sdpa_flash=dev.sdpa["flash"] if dev and dev.sdpa else None,
            compile=c.compiled,
            compile_requested=c.requested,
            compile_backend=c.backend,
            compile_error=c.error,
            compile_seconds=c.seconds,
            compile_graphs=c.graphs,
            compile_graph_breaks=c.graph_breaks,
            resumed=st.resumed,
            gates=st.gates,
            gate_shares=self.gate_shares,
            optim_groups=optim_counts(f.optim_record),
            error=error,
            failed_iter=failed_iter,
            causality=self._causality(),
            notes=list(st.notes),
            updated=results.now_iso(),
            exit_code=exit_code,
            stopped_by=stopped_by,
            post_training_error=post_training_error,
        )

    def write_summary(self, status: str, **ending: Any) -> results.JobSummary:
        """summary.json rewritten atomically (rank 0; ``results`` turns the record into the
        file's object); every rank gets the same record back. ``ending``: ``summary``'s keywords."""
        s = self.summary(status, **ending)
        if self.is_main:
            self.jd.write_summary(s)
        return s

    def record_failure(self, error: str, exit_code: int) -> None:
        """Rank 0: a failed run's summary.json, unless a measured result is already final."""
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


def optim_counts(optim_record: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    if not optim_record:
        return None
    out = [
        {k: g[k] for k in ("name", "weight_decay", "kinds", "tensors", "params")}
        for g in optim_record["groups"]
    ]
    fr = optim_record["frozen"]
    out.append(
        {
            "name": "frozen",
            "weight_decay": None,
            "kinds": [],
            "tensors": fr["tensors"],
            "params": fr["params"],
        }
    )
    return out
