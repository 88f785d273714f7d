"""The fast tier's list of slow tests (tests/helpers/tiers.py) is read and written as it says."""

from __future__ import annotations

from pathlib import Path

from helpers import tiers

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest">
<testcase classname="tests.pkg.test_a" name="test_quick" time="0.999" />
<testcase classname="tests.pkg.test_a" name="test_job[V0-one]" time="1.000" />
<testcase classname="tests.pkg.test_a.TestGroup" name="test_in_class" time="12.5" />
<testcase classname="tests.test_b" name="test_top" time="3" />
<testcase classname="tests.gone.test_c" name="test_removed_file" time="9" />
</testsuite></testsuites>
"""


def test_the_ids_of_tests_at_or_over_the_threshold_as_pytest_names_them(tmp_path: Path):
    (tmp_path / "tests" / "pkg").mkdir(parents=True)
    (tmp_path / "tests" / "pkg" / "test_a.py").write_text("")
    (tmp_path / "tests" / "test_b.py").write_text("")
    xml = tmp_path / "suite.xml"
    xml.write_text(JUNIT)
    assert tiers.slow_ids_from_junit(xml, 1.0, tmp_path) == {
        "tests/pkg/test_a.py::TestGroup::test_in_class": 12.5,
        "tests/pkg/test_a.py::test_job[V0-one]": 1.0,
        "tests/test_b.py::test_top": 3.0,
    }


def test_the_list_skips_comments_and_blank_lines(tmp_path: Path):
    listed = tmp_path / "slow.txt"
    listed.write_text("# a comment\n\ntests/test_b.py::test_top\t2.5\ntests/x.py::t[a b]\n")
    assert tiers.read_slow_list(listed) == {
        "tests/test_b.py::test_top": 2.5,
        "tests/x.py::t[a b]": 0,
    }
    assert tiers.read_slow_list(tmp_path / "absent.txt") == {}


def test_the_longest_listed_tests_start_first_and_the_rest_keep_their_order(tmp_path: Path):
    listed = tmp_path / "slow.txt"
    listed.write_text("t::b\t2.0\nt::d\t30.5\nt::e\t2.0\n")
    items = [_Item(f"t::{name}") for name in "abcdef"]
    tiers.longest_first(items, listed)
    assert [i.nodeid for i in items] == ["t::d", "t::b", "t::e", "t::a", "t::c", "t::f"]


class _Item:
    def __init__(self, nodeid: str):
        self.nodeid = nodeid
        self.marks: list = []

    def add_marker(self, mark) -> None:
        self.marks.append(mark.name)


def test_listed_tests_are_marked_slow_and_a_stale_list_is_refused_on_a_whole_run(tmp_path: Path):
    listed = tmp_path / "slow.txt"
    listed.write_text("tests/test_b.py::test_top\t1.5\ntests/test_b.py::test_renamed\t3\n")
    items = [_Item("tests/test_b.py::test_top"), _Item("tests/test_b.py::test_other")]
    whole = [str(tiers.TESTS)]
    problem = tiers.mark_listed_slow(items, whole, listed)
    assert [i.marks for i in items] == [["slow"], []]
    assert problem and "1 test(s)" in problem and "test_renamed" in problem, problem
    # a run of some files only does not see the whole suite: nothing to say
    part = [str(tiers.TESTS / "test_b.py"), str(tiers.TESTS)]
    assert tiers.mark_listed_slow([_Item("tests/test_b.py::test_top")], part, listed) is None
    assert tiers.mark_listed_slow(items, [f"{tiers.TESTS}::x"], listed) is None
    listed.write_text("tests/test_b.py::test_top\n")
    assert tiers.mark_listed_slow(items, whole, listed) is None


def test_the_committed_list_names_only_tests_of_this_suite_files():
    for test_id in tiers.read_slow_list():
        assert (tiers.TESTS.parent / test_id.split("::")[0]).is_file(), test_id


def test_the_list_can_be_switched_off_for_the_mutation_runs(tmp_path: Path, monkeypatch):
    listed = tmp_path / "slow.txt"
    listed.write_text("tests/test_b.py::test_top\ntests/test_b.py::test_renamed\n")
    items = [_Item("tests/test_b.py::test_top")]
    monkeypatch.setenv("ABLATE_SLOW_LIST", "off")
    assert tiers.mark_listed_slow(items, [str(tiers.TESTS)], listed) is None
    assert items[0].marks == []
    from mutation import _command

    assert _command("run")[1]["ABLATE_SLOW_LIST"] == "off"
