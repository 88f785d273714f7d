"""``python -m ablate.train JOB_DIR`` (one process) or under torchrun (one process per rank)."""

import sys

from ablate.train.job import main

if __name__ == "__main__":
    sys.exit(main())
