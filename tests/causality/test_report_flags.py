"""The report says, per step, whether it was checked before training and on its trained weights;
an unchecked or leaking step is never bold and its improvement is not presented."""

from __future__ import annotations

from pathlib import Path

from helpers.report_factory import Job, make_matrix, section, seed_jobs, table_rows  # noqa: E402

from ablate import results as R
from ablate.report import aggregate, build, write_report


def _report(mdir: Path) -> str:
    return write_report([mdir], plots=False)


def test_checked_steps_are_compared_as_before(tmp_path):
    md = _report(make_matrix(tmp_path, seed_jobs()))
    rows = table_rows(md)
    # one seed per step: an improvement with no verdict (tests/report/test_report_verdicts.py
    # has the bold cases, with seeds)
    # marked: seed_jobs' V0 ran on 4 x A10G, V18 on 1 x cpu (an unequal condition, named)
    assert rows[3][:3] == ["V18 ⚠", "RA + R-MLP", "3.32"] and rows[3][4] == "+0.132"
    assert rows[3][3] == "+11.5% (this seed only)"
    assert "Steps: V0: checked, V16: checked, V17: checked, V18: checked." in section(
        md, "Causality"
    )


def test_a_leaked_step_is_never_bold_and_its_improvement_is_not_shown(tmp_path):
    jobs = seed_jobs()
    jobs[3].status, jobs[3].causality = R.LEAKED, "leaked"  # V18: the best loss, and it leaked
    md = _report(make_matrix(tmp_path, jobs))
    rows = table_rows(md)
    assert rows[3][2] == "3.32 (leaked)" and rows[3][3] == "not shown (V18 leaked)"
    assert "**" not in "".join(rows[3])
    assert rows[1][2] == "3.38" and rows[2][2] == "3.38"  # one seed: no verdict, no bold
    caus = section(md, "Causality")
    assert "V18: leaked" in caus and "| leaked" in caus
    assert "V18: LEAKED" in section(md, "Notes")
    prog = section(md, "Progression")
    assert (
        "11" not in prog.split("V18")[-1].split("\n")[0]
    )  # no percentage on V18's progression row
    coll, stats = build([tmp_path / "test_matrix_results_20251111_170325"])
    agg = aggregate(coll, stats).set_index("step")
    assert agg.loc["V18", "causality"] == "leaked" and not agg.loc["V18", "is_best"]
    assert agg.loc["V18", "improvement_pct"] != agg.loc["V18", "improvement_pct"]  # NaN


def test_unchecked_steps_are_flagged_and_not_presented(tmp_path):
    jobs = [
        Job(
            j.step,
            j.architecture,
            j.best,
            ra_w_rec=j.ra_w_rec,
            rmlp_w_rec=j.rmlp_w_rec,
            world_size=j.world_size,
            device=j.device,
            causality="unchecked",
        )
        for j in seed_jobs()
    ]
    md = _report(make_matrix(tmp_path, jobs))
    rows = table_rows(md)
    assert all("**" not in "".join(r) for r in rows)
    assert rows[3][3] == "not shown (V18 unchecked; V0 unchecked)"
    assert "preflight=false" in section(md, "Warnings")  # said once: the warning, not a note
    assert "Steps: V0: unchecked" in section(md, "Causality")


def test_old_results_without_a_record_are_read_but_not_presented(tmp_path):
    jobs = seed_jobs()
    for j in jobs:
        j.causality = None
    md = _report(make_matrix(tmp_path, jobs))
    rows = table_rows(md)
    assert rows[0][2] == "3.75" and rows[3][2] == "3.32"
    assert rows[3][3].startswith("not shown")
    assert "no causality record" in section(md, "Warnings")  # said once: the warning


def test_causality_state_of_each_record_combination():
    ok = {"ok": True}
    assert R.causality_state(None) == R.UNRECORDED
    assert R.causality_state({"status": "completed"}) == R.UNRECORDED
    assert R.causality_state({"causality": R.causality_entry(ok, ok)}) == R.CHECKED
    assert R.causality_state({"causality": R.causality_entry(ok, None)}) == R.TRAINED_UNCHECKED
    assert (
        R.causality_state({"causality": R.causality_entry(ok, {"ok": None})}) == R.TRAINED_UNCHECKED
    )
    assert R.causality_state({"causality": R.causality_entry(None, ok)}) == R.UNCHECKED
    assert R.causality_state({"causality": R.causality_entry(ok, {"ok": False})}) == R.LEAKED
    assert R.causality_state({"causality": R.causality_entry(ok, ok, [{"ok": False}])}) == R.LEAKED
    assert R.causality_state({"status": R.LEAKED}) == R.LEAKED
