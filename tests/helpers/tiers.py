"""Which tests run in the fast tier (``pytest -m "not slow"``).

Two ways a test leaves the fast tier (the full run, README's test command, runs them all):
- ``@pytest.mark.slow`` in its file, or ``slow_unless`` for the cases of a long parametrized grid;
- its id in ``tests/slow_tests.txt``: the tests that took a second or more in a measured run of the
  whole suite (training jobs, subprocesses, probes of a model), written by this module from that
  run's JUnit XML, so that the fast tier stays a few minutes as the suite grows::

      python -m pytest -q tests --junitxml=/tmp/suite.xml
      python tests/helpers/tiers.py /tmp/suite.xml

The root conftest marks the listed tests slow, and refuses a list that names a test the whole
suite no longer has (a renamed test would otherwise drop out of the list unnoticed).
"""

from __future__ import annotations

import argparse
import os
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parents[1]
SLOW_LIST = TESTS / "slow_tests.txt"
THRESHOLD_S = 1.0
HEADER = """\
# Tests the fast tier (pytest -m "not slow") leaves out: each took {threshold} s or more in a
# measured run of the whole suite. Written by tests/helpers/tiers.py (see its docstring); the
# root conftest marks them slow, and under pytest-xdist starts the longest first (fewer workers
# idle at the end). One test per line: its id, a tab, its seconds in that run.
"""


def slow_unless(cases: Iterable[Any], fast: Callable[[Any], bool], label: Callable[[Any], str]):
    """Each case as a pytest param named ``label(case)``; the cases ``fast`` picks run in the fast
    tier, every other one is marked slow (the full run runs them all)."""
    return [
        pytest.param(case, id=label(case), marks=() if fast(case) else pytest.mark.slow)
        for case in cases
    ]


def read_slow_list(path: Path = SLOW_LIST) -> dict[str, float]:
    """Each listed test id with its measured seconds (0 where a line gives none)."""
    if not path.exists():
        return {}
    out: dict[str, float] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        test_id, _, seconds = line.partition("\t")
        try:
            out[test_id.strip()] = float(seconds)
        except ValueError:
            out[test_id.strip()] = 0.0
    return out


def longest_first(items: list, path: Path = SLOW_LIST) -> None:
    """Order ``items`` in place: the listed tests by their measured seconds, longest first, then the
    rest as collected. pytest-xdist hands tests out in this order, so a long test no longer starts
    last while the other worker has nothing left to do."""
    seconds = read_slow_list(path)
    position = {id(item): i for i, item in enumerate(items)}
    items.sort(key=lambda item: (-seconds.get(item.nodeid, 0.0), position[id(item)]))


def mark_listed_slow(items: list, args: list[str], path: Path = SLOW_LIST) -> str | None:
    """Mark the listed tests among ``items`` slow. When ``args`` select the whole suite, a listed
    test the suite does not have is a problem (returned as one line): the list is out of date.
    ``ABLATE_SLOW_LIST=off`` marks nothing (benchmarks/mutation.py: a module's tests stay the ones
    its mutation scores were measured with)."""
    if os.environ.get("ABLATE_SLOW_LIST") == "off":
        return None
    listed = read_slow_list(path)
    marked = set()
    for item in items:
        if item.nodeid in listed:
            item.add_marker(pytest.mark.slow)
            marked.add(item.nodeid)
    whole_suite = bool(args) and all("::" not in a and Path(a).resolve() == TESTS for a in args)
    missing = sorted(set(listed) - marked)
    if whole_suite and missing:
        return (
            f"{path} names {len(missing)} test(s) the suite does not have (first: {missing[0]}); "
            "remove them, or write the list again: python tests/helpers/tiers.py SUITE.xml"
        )
    return None


def _test_id(classname: str, name: str, root: Path) -> str | None:
    """A JUnit testcase's pytest id (``tests/x/test_y.py::Class::name[param]``)."""
    parts = classname.split(".")
    for i in range(len(parts), 0, -1):
        path = "/".join(parts[:i]) + ".py"
        if (root / path).is_file():
            return "::".join([path, *parts[i:], name])
    return None


def slow_ids_from_junit(xml_path: Path, threshold_s: float, root: Path) -> dict[str, float]:
    """The tests of the run that took ``threshold_s`` or more, by id, with their seconds."""
    ids: dict[str, float] = {}
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        seconds = float(case.get("time", 0.0))
        if seconds >= threshold_s:
            test_id = _test_id(case.get("classname", ""), case.get("name", ""), root)
            if test_id is not None:
                ids[test_id] = seconds
    return dict(sorted(ids.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("junit_xml", type=Path, help="JUnit XML of a run of the whole suite")
    parser.add_argument("--threshold", type=float, default=THRESHOLD_S, metavar="SECONDS")
    args = parser.parse_args(argv)
    if not args.junit_xml.is_file():
        print(f"error: {args.junit_xml} is not a file (pytest --junitxml=FILE writes one)")
        return 2
    ids = slow_ids_from_junit(args.junit_xml, args.threshold, TESTS.parent)
    SLOW_LIST.write_text(
        HEADER.format(threshold=args.threshold)
        + "".join(f"{test_id}\t{seconds:.1f}\n" for test_id, seconds in ids.items()),
        encoding="utf-8",
    )
    print(f"{SLOW_LIST}: {len(ids)} tests of {args.threshold} s or more")
    return 0


if __name__ == "__main__":
    sys.exit(main())
