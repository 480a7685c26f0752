"""The retrieval, replicate and bootstrap assets through Dagster on a tiny SYNTHETIC DE layer.

Two dataset partitions (vcpi_0001, vcpi_0002) get hand-written DE tables: 12 compounds in one
context (A549, 24 h, 1 µM), each compound's true logFC vector shared by both datasets plus small
noise, so each query's matched partner is its nearest target (strict retrieval = 1.0 exactly);
vcpi_0001 also has a sep partition with 2 replicates per compound (3 for the first). The whole
chain — match_candidates, matched_conditions, agreement_scores, retrieval_scores,
bootstrap_summary, replicate_agreement, bootstrap_summary_replicates — runs on the real compute
resource (local subprocess), the checks must pass and the views must answer.
"""
from __future__ import annotations

import warnings

import duckdb
import numpy as np
import pandas as pd
import pytest

from cpb_assets.effects.de import DE_COLUMNS

A, B = "vcpi_0001", "vcpi_0002"
N_CID, N_GENES = 12, 40


def _de_rows(ds: str, mode: str, vectors: dict, rng) -> pd.DataFrame:
    """Long DE rows (contrast × gene) for {contrast_id: (cid, logFC vector)} (SYNTHETIC)."""
    out = []
    genes = [f"ENSG{g:011d}" for g in range(N_GENES)]
    for contrast, (cid, lfc) in vectors.items():
        t = lfc * 8.0
        p = np.clip(np.abs(rng.normal(size=N_GENES)) * 0.02, 1e-6, 1) * (np.abs(lfc) < 0.3) + 1e-4
        out.append(pd.DataFrame({
            "dataset": ds, "mode": mode, "stratum": "CVCL_0023", "contrast_id": contrast,
            "treated_label": f"{contrast}_1uM_24h", "control_label": "DMSO_24h", "cell_type": "CVCL_0023",
            "pubchem_cid": cid, "perturbagen": f"cmp{cid}", "dose_uM": 1.0, "time_h": 24.0, "plate": "P1",
            "well": contrast[-3:], "gene": genes, "logFC": lfc, "AveExpr": 5.0, "t": t, "P_Value": p / 2,
            "adj_P_within": p, "adj_P_across": p, "B": 0.0, "CI_L": lfc - 0.1, "CI_R": lfc + 0.1,
            "stdev_unscaled": 0.1, "stdev_scaled": 0.1, "sigma": 1.0, "df_total": 20.0,
            "plate_confounded": False}))
    return pd.concat(out, ignore_index=True)[DE_COLUMNS]


def _write(home, ds, mode, de):
    folder = home / "tables" / "de" / f"dataset={ds}" / f"mode={mode}"
    folder.mkdir(parents=True)
    de.drop(columns=["dataset", "mode"]).to_parquet(folder / "stratum-000.parquet", index=False)


@pytest.fixture(scope="module")
def stats_home(tmp_path_factory):
    import dagster as dg

    from tests.conftest import make_home, home_environment

    home = make_home(tmp_path_factory.mktemp("stats_home"))
    rng = np.random.default_rng(4)
    truth = {str(1000 + i): rng.normal(size=N_GENES) for i in range(N_CID)}
    for ds in (A, B):
        vec = {f"{ds}_c{i:03d}": (cid, v + 0.05 * rng.normal(size=N_GENES)) for i, (cid, v) in enumerate(truth.items())}
        _write(home, ds, "group", _de_rows(ds, "group", vec, rng))
    sep = {}
    for i, (cid, v) in enumerate(truth.items()):
        for r in range(3 if i == 0 else 2):
            sep[f"{A}_s{i:02d}r{r}"] = (cid, v + 0.3 * rng.normal(size=N_GENES))
    _write(home, A, "sep", _de_rows(A, "sep", sep, rng))

    checks = []
    with home_environment(home):
        warnings.filterwarnings("ignore")
        from cpb_assets.agreement import assets as ag
        from cpb_jobs.definitions import ALL_ASSETS, ALL_CHECKS, defs

        with dg.DagsterInstance.get() as instance:
            def run(assets, partition=None):
                sel = dg.AssetSelection.assets(*assets) | dg.AssetSelection.checks_for_assets(*assets)
                r = dg.materialize([*ALL_ASSETS, *ALL_CHECKS], selection=sel, instance=instance,
                                   partition_key=partition, resources=defs.resources, raise_on_error=True)
                checks.extend(ev.event_specific_data for ev in r.all_events
                              if ev.event_type_value == "ASSET_CHECK_EVALUATION")

            run([ag.match_candidates])
            run([ag.matched_conditions, ag.agreement_scores, ag.retrieval_scores, ag.bootstrap_summary], f"{A}__{B}")
            run([ag.replicate_agreement, ag.bootstrap_summary_replicates], A)
    return home, checks


def _sql(home, query):
    con = duckdb.connect(str(home / "catalog.duckdb"), read_only=True)
    try:
        return con.execute(query).df()
    finally:
        con.close()


def test_checks_pass(stats_home):
    _, checks = stats_home
    names = {c.check_name for c in checks}
    assert {"retrieval_ranks", "replicate_agreement_rules", "bootstrap_summary_intervals",
            "bootstrap_replicates_intervals"} <= names
    assert all(c.passed for c in checks), [(c.check_name, c.metadata) for c in checks if not c.passed]


def test_retrieval_view_planted_partner_first(stats_home):
    home, _ = stats_home
    df = _sql(home, "select * from retrieval")
    assert set(df["pair"]) == {f"{A}__{B}"}
    strict = df.loc[df["positive"] == "strict_matched_condition"]
    assert len(strict) == 2 * N_CID * 3  # directions × queries × similarities
    assert (strict["observed"] == 1.0).all() and (strict["n_candidates"] == N_CID).all()
    assert (strict["n_genes"] == N_GENES).all()


def test_replicate_views(stats_home):
    home, _ = stats_home
    rep = _sql(home, "select * from replicate_agreement where metric = 'spearman_logfc'")
    assert len(rep) == N_CID and set(rep["dataset"]) == {A}
    first = rep.loc[rep["pubchem_cid"] == "1000"].iloc[0]
    assert (first["n_replicates"], first["n_pairs"]) == (3, 3)
    assert (rep.loc[rep["pubchem_cid"] != "1000", "n_pairs"] == 1).all()
    assert rep["observed"].mean() > 0.8 and rep["observed"].mean() > rep["baseline"].mean()
    rr = _sql(home, "select * from replicate_retrieval where positive = 'strict_matched_condition'")
    # 25 replicate rows, each retrieving among the 24 others
    assert len(rr) == 25 * 3 and (rr["n_candidates"] == 24).all() and rr["observed"].mean() > 0.9


def test_bootstrap_view(stats_home):
    home, _ = stats_home
    bs = _sql(home, "select * from bootstrap_summary")
    assert set(bs["scope"]) == {"pair", "dataset"}
    assert {"pair", "pair_cell", "retrieval", "dataset", "replicate_retrieval"} <= set(bs["level"])
    cell = bs.loc[(bs["level"] == "pair") & (bs["metric"] == "spearman_logfc") & (bs["column"] == "observed")].iloc[0]
    scores = _sql(home, "select pubchem_cid, observed from agreement_pairs where metric = 'spearman_logfc'")
    assert cell["estimate"] == pytest.approx(scores["observed"].mean(), abs=1e-12)  # one dose per CID
    assert cell["method"] == "bca" and cell["lo"] <= cell["estimate"] <= cell["hi"]
    assert (cell["n_clusters"], cell["n_rows"]) == (N_CID, N_CID)
    ret = bs.loc[(bs["level"] == "retrieval") & (bs["variant"] == "strict_matched_condition")]
    assert (ret.loc[ret["column"] == "observed", "estimate"] == 1.0).all()
    assert (ret.loc[ret["column"] == "observed", "method"] == "bca").all()  # all bootstrap values equal


def test_checks_fail_on_broken_outputs(stats_home):
    from cpb_assets.agreement.assets import check_bootstrap, check_retrieval

    home, _ = stats_home
    df = pd.read_parquet(home / "tables" / "retrieval" / f"pair={A}__{B}" / "part.parquet")
    assert check_retrieval(df) == []
    bad = df.copy()
    bad.loc[bad.index[0], "rank"] = bad["n_candidates"].iloc[0] + 1
    assert "rank outside 1..N" in check_retrieval(bad)
    bs = pd.read_parquet(home / "tables" / "bootstrap_summary" / "scope=pair" / f"key={A}__{B}" / "part.parquet")
    assert check_bootstrap(bs) == []
    bad = bs.copy()
    ok = bad.index[bad["method"] == "bca"][0]
    bad.loc[ok, ["lo", "hi"]] = [1.0, 0.0]
    assert "lo above hi" in check_bootstrap(bad)
