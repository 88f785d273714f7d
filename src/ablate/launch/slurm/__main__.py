"""``python -m ablate.launch.slurm status|wait DIR`` moved to the matrix's entry point (the launcher
does not write reports): this only says where, as one error line."""

import sys

from ablate.errors import die

if __name__ == "__main__":
    argv = sys.argv[1:]
    what = argv[0] if argv and argv[0] in ("status", "wait") else "status"
    where = argv[1] if len(argv) > 1 else "<matrix dir>"
    die(f"this command moved: python -m ablate.matrix {what}={where}")
