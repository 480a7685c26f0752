"""The OP3 stage through Dagster on a small SYNTHETIC op3 DE partition: targets, split view,
descriptors, predictions (compute resource + MLflow), results view and plot."""
import warnings

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from cpb_assets.lpm import fingerprints as fpm
from cpb_resources.catalog import query_catalog
from cpb_resources.storage import StorageResource, write_parquet

warnings.filterwarnings("ignore")
CIDS = ["2244", "3672", "5090", "2519", "3345", "5743", "60823", "1983"]  # real CIDs, SYNTHETIC effects
SMILES = {"2244": "CC(=O)Oc1ccccc1C(=O)O", "3672": "CC(C)Cc1ccc(cc1)C(C)C(=O)O", "1983": "CC(=O)Nc1ccc(O)cc1"}


def _synthetic_op3(home):
    rng = np.random.default_rng(3)
    rows = []
    genes = [f"ENSG{g:011d}" for g in range(25)]
    for cell in ("CL_0000623", "CL_0000084", "CL_0000763"):
        for cid in CIDS:
            lfc = rng.normal(size=len(genes))
            p = rng.uniform(1e-6, 1, size=len(genes))
            for g, l, pv in zip(genes, lfc, p):
                rows.append({"cell_type": cell, "pubchem_cid": cid, "perturbagen": f"drug{cid}",
                             "contrast_id": f"{cell}:{cid}", "gene": g, "logFC": l, "P_Value": pv})
    write_parquet(pd.DataFrame(rows), home / "tables/de/dataset=op3/mode=group/stratum-000.parquet")
    fp = pd.DataFrame({"pubchem_cid": CIDS, "smiles": [SMILES.get(c) for c in CIDS], "smiles_from": "source"})
    tab = fpm.fingerprint_table(fp, fpm.OP3_FP["radius"], fpm.OP3_FP["n_bits"])
    import pyarrow.parquet as pq
    path = home / "lpm" / "fingerprints" / f"{fpm.OP3_FP['name']}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(tab, path)


def test_op3_stage_end_to_end(cpb_home):
    from cpb_assets.op3.assets import op3_descriptors, op3_predictions, op3_results, op3_targets
    from cpb_jobs.definitions import defs

    _synthetic_op3(cpb_home)
    res = defs.resources
    assets = [op3_targets, op3_descriptors, op3_predictions, op3_results]
    r = dg.materialize(assets, selection=[op3_targets], resources=res, raise_on_error=False)
    assert r.success
    split = query_catalog(cpb_home / "catalog.duckdb", "select split, count(distinct pubchem_cid) n from op3_split group by 1")
    assert dict(zip(split["split"], split["n"])) == {"train": 6, "test": 2}  # round(25 % of 8) compounds
    for d in ("none", "morgan_trainable"):
        assert dg.materialize(assets, selection=[op3_descriptors], partition_key=d, resources=res).success
    cfg = {"ops": {"op3_predictions": {"config": {"epochs": 15, "ranks": [2, 4]}}}}
    for d in ("none", "morgan_trainable"):
        r = dg.materialize(assets, selection=[op3_predictions], resources=res, run_config=cfg,
                           partition_key=dg.MultiPartitionKey({"descriptor": d, "seed": "0"}))
        assert r.success
        (mat,) = r.asset_materializations_for_node("op3_predictions")
        assert mat.metadata["n_test"].value == 6 and "mlflow_run_id" in mat.metadata
        run = res["mlflow"].get_run(mat.metadata["mlflow_run_id"].value)
        assert run.data.params["descriptor"] == d and "mrrmse" in run.data.metrics
    r = dg.materialize(assets, selection=[op3_results], resources=res,
                       run_config={"ops": {"op3_results": {"config": {"seeds": ["0"]}}}})
    assert r.success
    out = query_catalog(cpb_home / "catalog.duckdb",
                        "select descriptor, metric, n_seeds, n_rows, mean, reference from op3_results order by 1, 2")
    assert sorted(out["descriptor"].unique()) == ["morgan_trainable", "none"]
    assert set(out["metric"]) == {"mrrmse", "mae", "pearson", "spearman", "cosine"}
    assert (out["n_rows"] == 6).all() and (out["n_seeds"] == 1).all()
    ref = out.set_index(["descriptor", "metric"])["reference"]
    assert ref[("none", "mrrmse")] == pytest.approx(0.8161)
    assert (cpb_home / "reports/op3/op3_results.png").stat().st_size > 5000
