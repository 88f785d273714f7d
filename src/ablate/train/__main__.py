"""``python -m ablate.train JOB_DIR`` (one process) or under torchrun (one process per rank).

Stop signals are caught before anything heavy is imported (torch takes seconds to load): a
signal in that time is acted on at the first iteration (a checkpoint, exit code 3)."""

import sys

from ablate.train import signals

signals.catch_early()

from ablate.train.job import main  # noqa: E402  (after the signal handlers, on purpose)

if __name__ == "__main__":
    sys.exit(main())
