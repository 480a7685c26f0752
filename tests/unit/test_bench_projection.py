"""The compendium projection of ``benchmarks/projection.py`` is plain arithmetic: check it by hand."""
from __future__ import annotations

import pytest

from benchmarks import projection


def _rows():
    def r(workload, genes, samples, coefficients, fast, R=None):
        return {"benchmark": "fast_de", "workload": workload, "genes": genes, "samples": samples,
                "coefficients": coefficients, "project_s": fast, "baseline_s": R, "size": workload}
    return [r("l1000", 1_000, 2_500, 500, 1.0, 10.0), r("drugseq", 1_000, 500, 100, 1.0, 5.0),
            r("sep", 500, 400, 400, 1.0, 20.0), r("l1000_alone", 1_000, 2_500, 500, 2.5),
            r("l1000_alone", 1_000, 10_000, 500, 5.0), r("drugseq_alone", 20_000, 2_000, 300, 40.0),
            r("sep_batch", 2_000, 2_500, 2_000, 10.0), r("sep_batch_l1000", 1_000, 2_500, 2_500, 5.0)]


def test_self_check():
    projection.self_check()


def test_unit_costs_come_from_the_named_rows():
    uc = {k: v[0] for k, v in projection.unit_costs(_rows()).items()}
    assert uc[("fast", "normalized", "group")] == pytest.approx(2.5 / 2.5e6)  # the 2,500-sample row, not 10,000
    assert uc[("fast", "count", "group")] == pytest.approx(40.0 / 4e7)
    assert uc[("fast", "count", "sep")] == pytest.approx(10.0 / 5e6)
    assert uc[("R", "count", "group")] == pytest.approx(5.0 / 5e5)
    assert uc[("R", "count", "sep")] == pytest.approx(20.0 / 2e5 * (2_000 / 400) ** 2)
    assert uc[("R", "normalized", "sep")] == uc[("R", "normalized", "group")] == pytest.approx(10.0 / 2.5e6)


def test_compendium_totals_add_up():
    res, md = projection.compendium(_rows())
    assert len(res["datasets"]) == 13 and "all 13" in md
    t = res["totals"]
    assert t["fast_s"] == pytest.approx(sum(d["fast_group_s"] + d["fast_sep_s"] for d in res["datasets"]))
    l1 = next(d for d in res["datasets"] if d["dataset"] == "l1000_phase1")
    assert l1["fast_group_s"] == pytest.approx(1e-6 * 978 * 699_276)
