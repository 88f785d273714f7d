"""The shape of the answer to a user mistake: one line, starting with "error: "."""

from __future__ import annotations


def assert_one_error_line(err: str, *says: str) -> None:
    """``err`` (a command's stderr) is exactly one line, "error: ...", holding each of ``says``."""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for part in says:
        assert part in err, err
