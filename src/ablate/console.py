"""Where the matrix's own message lines go: stdout, or above a live progress view when one is drawn.

Launchers print through :func:`emit`; the matrix's live view (ablate.matrix.progress) installs
itself as the sink while it runs, so launch code never imports the matrix package.
"""

from __future__ import annotations

from collections.abc import Callable

from ablate.errors import exit_quietly_on_closed_pipe

_sink: Callable[[str], None] | None = None


def emit(line: str) -> None:
    sink = _sink
    if sink is not None:
        sink(line)
        return
    try:
        print(line, flush=True)
    except (OSError, ValueError):
        # stdout was closed (`python -m ablate.matrix ... | head`: EPIPE; the terminal or SSH
        # session went away: EIO): the jobs and the report matter more than our messages, so the
        # matrix goes on quietly instead of dying mid-run.
        exit_quietly_on_closed_pipe()


def set_sink(sink: Callable[[str], None] | None) -> Callable[[str], None] | None:
    """Install a sink (None: plain stdout); returns the previous one."""
    global _sink
    previous, _sink = _sink, sink
    return previous
