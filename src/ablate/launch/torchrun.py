"""``python -m ablate.launch.torchrun ARGS``: torchrun (``torch.distributed.run``, same arguments)
with its endings reported in one line each instead of a traceback.

torchrun ends every stop and every failing job with a Python traceback of its own
(``SignalException`` when it is sent SIGTERM/SIGINT/SIGHUP, ``ChildFailedError`` and a "Root Cause"
box when a rank exits non-zero), although nothing went wrong in torchrun itself. Here:

- a rank that failed: ``torchrun: rank R (PID P) exited with code C`` (the rank printed its own
  ``error:`` line before), and this process exits with that code, so the launcher sees the
  trainer's own exit code (``ablate.outcome``) instead of torchrun's blanket 1;
- a rank killed by a signal: ``torchrun: rank R was killed: Signal 9 (SIGKILL) received by PID P``
  (``ablate.outcome.signal_from_log`` reads the signal from this line), exit code 1;
- torchrun stopped by a signal (it passes the signal to its ranks, which checkpoint):
  ``torchrun: stopped by SIGTERM; ...``, exit code 128 + the signal number.

torchrun's own log lines about those endings ("Received 15 death signal, shutting down workers",
"Sending process P closing signal SIGTERM", "failed (exitcode: 1) local_rank: 0 ...") are left out
(:func:`quiet_endings`): the one line above says it; its other warnings stay.

Every rank learns torchrun's PID (``ABLATE_TORCHRUN_PID``) to stop itself when torchrun dies
(``ablate.train.job.stop_with_torchrun``).
"""

from __future__ import annotations

import logging
import os
import signal
import sys

from ablate.outcome import EXIT_FAILED
from ablate.train.job import PARENT_PID_ENV

ENDING_LOGGERS = (
    "torch.distributed.elastic.agent.server.api",
    "torch.distributed.elastic.multiprocessing.api",
)
ENDING_MESSAGES = (
    "Received %s death signal",
    "Sending process %s closing signal",
    "failed (exitcode",
)
"""The log records torchrun writes as a job ends, by their format strings: our one line says it."""


def _not_an_ending(record: logging.LogRecord) -> bool:
    return not (isinstance(record.msg, str) and record.msg.startswith(ENDING_MESSAGES))


def quiet_endings() -> None:
    """Leave torchrun's records of a stop or a failed rank out of the log (see the module doc)."""
    for name in ENDING_LOGGERS:
        logger = logging.getLogger(name)
        if _not_an_ending not in logger.filters:
            logger.addFilter(_not_an_ending)


def _say(line: str) -> None:
    try:
        print(f"torchrun: {line}", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def _name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def describe_failure(rank: int, failure) -> tuple[str, int]:
    """(one line, exit code) for a rank's ProcessFailure."""
    code = int(getattr(failure, "exitcode", 1) or 1)
    pid = getattr(failure, "pid", "?")
    if code < 0:
        return (
            f"rank {rank} was killed: Signal {-code} ({_name(-code)}) received by PID {pid}",
            EXIT_FAILED,
        )
    return f"rank {rank} (PID {pid}) exited with code {code}", code


def main(argv: list[str] | None = None) -> int:
    os.environ[PARENT_PID_ENV] = str(os.getpid())
    try:
        from torch.distributed.elastic.multiprocessing.api import SignalException
        from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
        from torch.distributed.run import parse_args, run

        args = parse_args(sys.argv[1:] if argv is None else argv)
        quiet_endings()
        try:
            run(args)
        except ChildFailedError as e:
            rank, failure = e.get_first_failure()
            line, code = describe_failure(rank, failure)
            others = len(e.failures) - 1
            _say(line + (f" ({others} other rank(s) failed after it)" if others > 0 else ""))
            return code
        except SignalException as e:
            sig = int(e.sigval)
            _say(
                f"stopped by {_name(sig)}; its ranks were passed the signal "
                "(a training job checkpoints and can be resumed)"
            )
            return 128 + sig
    except KeyboardInterrupt:
        _say("interrupted")
        return 128 + int(signal.SIGINT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
