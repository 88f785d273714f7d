"""The shape of the answer to a user mistake: one line, starting with "error: "."""

from __future__ import annotations


def assert_one_error_line(err: str, *says: str) -> None:
    """``err`` (a command's stderr) is exactly one line, "error: ...", holding each of ``says``
    (and no traceback: the word would mean one was printed in place of the line)."""
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for part in says:
        assert part in err, err
