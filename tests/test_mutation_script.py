"""benchmarks/mutation.py: every module it mutates and every test file it runs exist, the command
line refuses what it cannot do, and (slow) one real mutmut run reports killed and surviving
mutants of a small part of a module."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("mutation", REPO / "benchmarks" / "mutation.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["mutation"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_every_module_s_files_and_fast_tests_exist():
    m = _script()
    names = [mod.name for mod in m.MODULES]
    # the claim-carrying modules of issue 29
    for name in ("lock", "atomic", "noise", "stats", "warnings", "matched", "fingerprint"):
        assert name in names
    for name in ("verify", "config", "results", "causality"):
        assert name in names
    for mod in m.MODULES:
        for f in mod.files:
            assert (REPO / f).is_file(), (mod.name, f)
        args = list(mod.tests)
        paths = [a for i, a in enumerate(args) if not a.startswith("-") and args[i - 1] != "-m"]
        assert paths, mod.name
        for t in paths:
            assert (REPO / t).is_file(), (mod.name, t)


def test_list_and_bad_arguments(capsys):
    m = _script()
    assert m.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "lock: src/ablate/lock.py" in out and "tests: tests/test_lock.py" in out
    for argv, text in (
        (["nope"], "unknown module(s) nope"),
        ([], "name the modules to mutate"),
        (["lock", "verify", "--only", "x*"], "--only applies to one module at a time"),
    ):
        with pytest.raises(SystemExit) as e:
            m.main(argv)
        assert e.value.code == 2 and text in capsys.readouterr().err


def test_the_work_folder_links_the_checkout_and_configures_the_module(tmp_path):
    m = _script()
    work = m.prepare(m.BY_NAME["fingerprint"], tmp_path)
    assert {p.name for p in work.iterdir()} == {"src", "tests", "conf", "docs", "pyproject.toml"}
    assert (work / "src").resolve() == REPO / "src"
    text = (work / "pyproject.toml").read_text()
    assert 'only_mutate = ["src/ablate/data/loader.py"]' in text
    assert 'pytest_add_cli_args_test_selection = ["tests/data/test_loader.py"]' in text
    assert text.count("[tool.mutmut]") == 1 and 'process_isolation = "forkserver"' in text
    again = m.prepare(m.BY_NAME["fingerprint"], tmp_path)  # from scratch each run
    assert again == work and not (work / "mutants").exists()


def test_an_equivalent_entry_excuses_only_the_change_it_names():
    m = _script()
    entry = m.Equivalent("pkg.mod.x_f__mutmut_*", "n += 1", "n = 1", "n is only compared with 0")
    same = "-    n += 1\n+    n = 1"
    why, stale = m.explain(
        ["pkg.mod.x_f__mutmut_3", "pkg.mod.x_f__mutmut_4", "pkg.mod.x_g__mutmut_1"],
        {
            "pkg.mod.x_f__mutmut_3": same,
            "pkg.mod.x_f__mutmut_4": "-    n += 1\n+    n += 2",  # another change, same line
            "pkg.mod.x_g__mutmut_1": same,  # the same change in another function
        },
        (entry,),
    )
    assert why == {
        "pkg.mod.x_f__mutmut_3": "n is only compared with 0",
        "pkg.mod.x_f__mutmut_4": "",
        "pkg.mod.x_g__mutmut_1": "",
    }
    assert stale == []
    # a removal: no added line; an entry nothing matched comes back as unused
    gone = m.Equivalent("pkg.mod.x_f__mutmut_*", "flush=True", "", "stderr is line-buffered")
    why, stale = m.explain(["pkg.mod.x_f__mutmut_9"], {"pkg.mod.x_f__mutmut_9": same}, (gone,))
    assert why == {"pkg.mod.x_f__mutmut_9": ""} and stale == [gone]
    why, _ = m.explain(
        ["pkg.mod.x_f__mutmut_9"], {"pkg.mod.x_f__mutmut_9": "-  flush=True,"}, (gone,)
    )
    assert why == {"pkg.mod.x_f__mutmut_9": "stderr is line-buffered"}


def test_every_equivalent_entry_names_a_mutated_module_and_says_why():
    m = _script()
    prefixes = {
        f.removeprefix("src/").removesuffix(".py").replace("/", ".") + "."
        for mod in m.MODULES
        for f in mod.files
    }
    assert m.EQUIVALENT
    for e in m.EQUIVALENT:
        assert any(e.mutant.startswith(p) for p in prefixes), e.mutant
        assert "__mutmut_" in e.mutant and e.removed and len(e.why) > 10, e


def test_the_wilson_interval_against_known_values():
    m = _script()
    # published values of the 95% Wilson score interval (e.g. Newcombe 1998, Table I; Agresti &
    # Coull 1998): 0 of 10, 5 of 10, 1 of 29 ... and the 0-successes closed form z^2 / (n + z^2)
    for k, n, lo, hi in (
        (0, 10, 0.0, 0.2775),
        (5, 10, 0.2366, 0.7634),
        (10, 10, 0.7225, 1.0),
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 40, 0.0, 0.0876),
    ):
        got = m.wilson(k, n)
        assert got == pytest.approx((lo, hi), abs=5e-5), (k, n, got)
    # symmetric: k survivors of n mirror n - k
    lo, hi = m.wilson(3, 50)
    assert m.wilson(47, 50) == pytest.approx((1 - hi, 1 - lo))
    # always inside [0, 1] and around the share; wider for fewer draws
    for k, n in ((0, 1), (1, 1), (1, 3), (7, 100), (99, 100)):
        lo, hi = m.wilson(k, n)
        assert 0.0 <= lo <= k / n <= hi <= 1.0
    assert m.wilson(2, 20)[1] > m.wilson(20, 200)[1]
    assert m.wilson(0, 0) == (0.0, 1.0)  # nothing run: nothing known


def test_the_sample_is_seeded_and_independent_of_the_listing_order():
    m = _script()
    names = [f"ablate.x.x_f__mutmut_{i}" for i in range(1, 301)]
    first = m.draw(names, 40, seed=7)
    assert len(first) == 40 == len(set(first)) and set(first) <= set(names)
    assert m.draw(list(reversed(names)), 40, seed=7) == first  # the same draw however listed
    assert m.draw(set(names), 40, seed=7) == first
    assert m.draw(names, 40, seed=8) != first  # another seed, another draw
    assert sorted(m.draw(names, 300, seed=7)) == sorted(names) == sorted(m.draw(names, 999, 1))
    # in a random order, so that a first part of it (the chunks run before a stop) is uniform too
    assert first != sorted(first) and m.draw(names, 10, seed=7) == first[:10]
    # every mutant can be drawn: over seeds, the draws cover the whole population
    seen = set()
    for seed in range(60):
        seen.update(m.draw(names, 40, seed))
    assert seen == set(names)


def test_a_sample_is_scored_over_the_drawn_mutants_only(tmp_path, monkeypatch):
    m = _script()
    work = tmp_path / "lock"
    work.mkdir()
    drawn = ["ablate.lock.x_a__mutmut_1", "ablate.lock.x_a__mutmut_2", "ablate.lock.x_b__mutmut_1"]
    meta = {"population": 240, "seed": 3, "drawn": [*drawn, "ablate.lock.x_d__mutmut_1"]}
    (work / "sample.json").write_text(json.dumps({**meta, "run": drawn}))
    results = {
        "ablate.lock.x_a__mutmut_1": "killed",
        "ablate.lock.x_a__mutmut_2": "survived",
        "ablate.lock.x_b__mutmut_1": "killed",
        "ablate.lock.x_c__mutmut_1": "survived",  # not drawn: not counted
    }
    monkeypatch.setattr(
        m, "statuses", lambda w, globs: {n: s for n, s in results.items() if n in globs}
    )
    monkeypatch.setattr(m, "diffs", lambda w, names: {n: "-    x = 1\n+    x = 2" for n in names})
    names = m._last_names(work, ("ignored*",))
    assert names == tuple(drawn)
    row = m.score(m.BY_NAME["lock"], work, names, 60.0)
    assert (row["mutants"], row["killed"], row["survived"], row["unexplained"]) == (3, 2, 1, 1)
    assert row["sampled"].startswith("sampled 4 of 240 (seed 3), 3 run (the first chunks")
    lo, hi = row["interval"]
    assert (lo, hi) == pytest.approx(tuple(100 * x for x in m.wilson(1, 3)))
    head = (work / "survivors.md").read_text().splitlines()[0]
    assert "sampled 4 of 240" in head and "95% interval" in head


def test_a_run_of_named_mutants_calls_an_entry_stale_only_once_its_function_ran_whole(
    tmp_path, monkeypatch
):
    m = _script()
    work = tmp_path / "lock"
    work.mkdir()
    results = {  # mutmut's list after `--only` the first two: the others "not checked"
        "ablate.lock.x_f__mutmut_1": "killed",
        "ablate.lock.x_g__mutmut_1": "killed",
        "ablate.lock.x_f__mutmut_2": "not checked",
    }

    def statuses(w, globs):
        return {
            n: s
            for n, s in results.items()
            if not globs or any(fnmatch.fnmatch(n, g) for g in globs)
        }

    monkeypatch.setattr(m, "statuses", statuses)
    monkeypatch.setattr(m, "diffs", lambda w, names: {n: "-    x = 1\n+    x = 2" for n in names})
    f_entry = m.Equivalent("ablate.lock.x_f__mutmut_*", "x = 1", "x = 2", "f's survivor, unrun")
    g_entry = m.Equivalent("ablate.lock.x_g__mutmut_*", "y = 1", "y = 2", "g's, killed now")
    monkeypatch.setattr(m, "EQUIVALENT", (f_entry, g_entry))
    only = ("ablate.lock.x_f__mutmut_1", "ablate.lock.x_g__mutmut_1")
    row = m.score(m.BY_NAME["lock"], work, only, 60.0)
    # f's entry may excuse its mutant 2, which did not run: not stale; all of g's ran: stale
    assert (row["mutants"], row["killed"], row["stale"]) == (2, 2, 1)
    text = (work / "survivors.md").read_text()
    assert "stale entry: ablate.lock.x_g__mutmut_*" in text and "x_f__mutmut_*" not in text
    results["ablate.lock.x_f__mutmut_2"] = "killed"  # a run of the whole function
    row = m.score(m.BY_NAME["lock"], work, (), 60.0)
    assert (row["mutants"], row["killed"], row["stale"]) == (3, 3, 2)


def test_sample_arguments_are_checked(capsys):
    m = _script()
    for argv, text in (
        (["lock", "--sample", "0"], "--sample takes a positive number"),
        (["lock", "--sample", "5", "--rescore"], "leave --sample out"),
    ):
        with pytest.raises(SystemExit) as e:
            m.main(argv)
        assert e.value.code == 2 and text in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("mutmut") is None and not Path(sys.executable).with_name("mutmut").exists(),
    reason="mutmut not installed",
)
def test_a_real_run_over_one_function(tmp_path, capsys):
    m = _script()
    code = m.main(
        ["verify", "--only", "ablate.data.verify.xǁVerifiedǁdescribe*", "--work", str(tmp_path)]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    row = next(line for line in out.splitlines() if line.startswith("| verify |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # Verified.describe's mutants (its units and arithmetic): every one is killed by test_verify
    assert int(cells[1]) >= 3 and cells[3] == "0 (0)" and cells[4] == "0.0%"
    assert (tmp_path / "verify" / "survivors.md").is_file()
