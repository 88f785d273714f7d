"""RunState: the counters a checkpoint carries, one definition, readable from older checkpoints."""

import os
import signal

from ablate.train.signals import StopSignals
from ablate.train.state import RunState


def test_state_round_trips_and_counts_a_resume():
    st = RunState(
        iter=7,
        train_seconds=12.5,
        timed_iters=6,
        best_val_loss=3.2,
        best_val_iter=5,
        gates={"ra_w_rec": [0.1]},
        notes=["x"],
        resumed=1,
    )
    back = RunState()
    back.load_state_dict(st.state_dict())
    assert back.iter == 7 and back.train_seconds == 12.5 and back.timed_iters == 6
    assert (
        back.best_val_loss == 3.2 and back.best_val_iter == 5 and back.gates == {"ra_w_rec": [0.1]}
    )
    assert back.notes == ["x"] and back.resumed == 2


def test_a_checkpoint_written_before_the_split_still_loads():
    # The "state" dict of checkpoints written by the one-class trainer (train_seconds = measured time).
    old = {
        "iter": 40,
        "train_seconds": 31.0,
        "warmup_seconds": 2.0,
        "eval_seconds": 1.0,
        "checkpoint_seconds": 0.5,
        "timed_iters": 39,
        "warmup_end_elapsed": 3.0,
        "best_val_loss": 4.1,
        "best_val_iter": 40,
        "final_val_loss": None,
        "last_train_loss": 4.0,
        "peak_memory_mb": None,
        "gates": None,
        "notes": None,
        "resumed": 0,
        "world_size": 1,
        "seed": 1,
        "step": "V0",
    }
    st = RunState()
    st.load_state_dict(old)
    assert st.iter == 40 and st.train_seconds == 31.0 and st.timed_iters == 39 and st.resumed == 1
    assert st.gates == {} and st.notes == []
    # its warmup end (fixed from a measured rate) is no longer state: the schedule is the budget's
    assert "warmup_end_elapsed" not in st.state_dict()
    assert st.state_dict()["train_seconds"] == 31.0  # the checkpoint key is unchanged


def test_stop_signals_set_a_flag_inside_and_restore_the_handler_after():
    before = signal.getsignal(signal.SIGUSR1)
    with StopSignals() as s:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert s.received == signal.SIGUSR1
    assert signal.getsignal(signal.SIGUSR1) is before
