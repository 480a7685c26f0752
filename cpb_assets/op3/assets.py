"""OP3 downstream evaluation assets (METHODS §5 "OP3 downstream"; docs/op3.md)."""
import json

import dagster as dg
import numpy as np
import pandas as pd

from cpb_assets.effects.assets import de_table
from cpb_assets.lpm import fingerprints as fpm
from cpb_assets.lpm.assets import compound_embeddings, morgan_fingerprints
from cpb_assets.op3.metrics import METRICS
from cpb_assets.op3.report import REFERENCE_MRRMSE, results_table, results_plot
from cpb_assets.op3.targets import compound_resplit, split_conditions, target_matrix
from cpb_assets.versioning import code_version
from cpb_resources.catalog import CatalogResource
from cpb_resources.compute import ComputeResource, ResourceRequest, WorkUnit
from cpb_resources.mlflow import MlflowResource
from cpb_resources.storage import StorageResource, atomic_path, write_parquet

OP3 = "op3"
# descriptor -> (source, frozen): where its compound vectors come from
DESCRIPTORS: dict[str, tuple[str, bool]] = {
    "none": ("none", False),
    "morgan_fixed": ("morgan", True),
    "morgan_trainable": ("morgan", False),
    "lpm_all": ("lpm:scalar_all", False),
    "lpm_l1000": ("lpm:scalar_l1000", False),
}
SEEDS = ["0", "1", "2", "3", "4", "10", "11", "12", "13", "14"]
DEMO_SEEDS = ["0", "1"]
MLFLOW_EXPERIMENT = "op3_downstream"
descriptor_partitions = dg.StaticPartitionsDefinition(list(DESCRIPTORS))
prediction_partitions = dg.MultiPartitionsDefinition({"descriptor": descriptor_partitions,
                                                      "seed": dg.StaticPartitionsDefinition(SEEDS)})
OP3_CODE = code_version("cpb_assets.op3.targets", "cpb_assets.op3.predictor", "cpb_assets.op3.metrics",
                        "cpb_assets.op3.workloads", "cpb_assets.op3.report")
PREDICT_REQUEST = ResourceRequest(cpus=1, mem_mb=3000, time_min=60, kind="gpu")


@dg.asset(
    deps=[dg.AssetDep(de_table, partition_mapping=dg.SpecificPartitionsPartitionMapping(
        [dg.MultiPartitionKey({"dataset": OP3, "mode": "group"})]))],
    group_name="op3", code_version=OP3_CODE, kinds={"python", "duckdb"},
    description="OP3 targets clipped sign(logFC)·−log10 P (conditions × genes, from the op3 group DE rows) and "
                "the compound re-split (25 % of compounds to test, numpy seed 42); view `op3_split`.",
)
def op3_targets(context: dg.AssetExecutionContext, storage: StorageResource,
                catalog: CatalogResource) -> dg.MaterializeResult:
    folder = storage.de_dir(OP3, "group")
    files = sorted(folder.glob("*.parquet"))
    if not files:
        raise dg.Failure(description=f"no op3 group DE rows at {folder}: materialize de_table[op3|group] first")
    cols = ["cell_type", "pubchem_cid", "perturbagen", "contrast_id", "gene", "logFC", "P_Value"]
    de = pd.concat([pd.read_parquet(f, columns=cols) for f in files], ignore_index=True)
    conditions, genes, y = target_matrix(de)
    test = compound_resplit(conditions["compound"])
    conditions["split"] = split_conditions(conditions, test)
    with atomic_path(storage.path("op3", "targets"), is_dir=True) as tmp:
        conditions.to_parquet(tmp / "conditions.parquet", index=False)
        (tmp / "genes.json").write_text(json.dumps(genes))
        np.save(tmp / "y.npy", y)
    write_parquet(conditions[["cell_type", "compound", "perturbagen", "pubchem_cid", "contrast_id", "split"]],
                  storage.table_path("op3_split"))
    catalog.refresh()
    n = conditions["split"].value_counts().to_dict()
    return dg.MaterializeResult(metadata={
        "conditions": len(conditions), "genes": len(genes), "train_conditions": int(n.get("train", 0)),
        "test_conditions": int(n.get("test", 0)), "test_compounds": len(test),
        "cell_types": int(conditions["cell_type"].nunique()),
    })


@dg.asset(
    partitions_def=descriptor_partitions,
    deps=[op3_targets, morgan_fingerprints,
          dg.AssetDep(compound_embeddings, partition_mapping=dg.AllPartitionMapping())],
    group_name="op3", code_version=OP3_CODE, kinds={"python"},
    description="Per-compound vectors of one OP3 descriptor: none (learned embedding only), Morgan radius 1 / "
                "2,000 bits (fixed or trainable), or LPM compound embeddings (all data; L1000 only).",
)
def op3_descriptors(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    name = context.partition_key
    source, _ = DESCRIPTORS[name]
    conditions = pd.read_parquet(storage.path("op3", "targets", "conditions.parquet"))
    compounds = sorted(conditions["compound"].unique())
    if source == "none":
        index, matrix = [], np.zeros((0, 0), np.float32)
    elif source == "morgan":
        path = storage.path("lpm", "fingerprints", f"{fpm.OP3_FP['name']}.parquet")
        cids, mat = fpm.load_fingerprints(path)
        rows = {c: i for i, c in enumerate(cids)}
        # a compound without a valid structure has a zero vector: it keeps its learned embedding instead
        index = [c for c in compounds if c in rows and mat[rows[c]].any()]
        matrix = np.stack([mat[rows[c]] for c in index]) if index else np.zeros((0, fpm.OP3_FP["n_bits"]), np.float32)
    else:
        variant = source.split(":", 1)[1]
        path = storage.path("tables", "compound_embeddings", f"variant={variant}", "part.parquet")
        if not path.exists():
            raise dg.Failure(description=f"no compound embeddings of LPM variant {variant!r} at {path}: "
                                         f"materialize compound_embeddings[{variant}] first")
        emb = pd.read_parquet(path, columns=["pubchem_cid", "embedding"])
        vec = dict(zip(emb["pubchem_cid"].astype(str), emb["embedding"]))
        index = [c for c in compounds if c in vec]
        matrix = np.stack([np.asarray(vec[c], np.float32) for c in index]) if index else np.zeros((0, 0), np.float32)
    with atomic_path(storage.path("op3", "descriptors", name), is_dir=True) as tmp:
        (tmp / "index.json").write_text(json.dumps(index))
        np.save(tmp / "matrix.npy", matrix.astype(np.float32))
    return dg.MaterializeResult(metadata={
        "descriptor": name, "compounds": len(compounds), "with_descriptor": len(index),
        "dim": int(matrix.shape[1]) if matrix.ndim == 2 else 0,
    })


class PredictionConfig(dg.Config):
    """Predictor settings; the defaults are the documented ones (docs/op3.md)."""

    epochs: int = 300
    ranks: list[int] = [8, 16, 32]


@dg.asset(
    partitions_def=prediction_partitions,
    deps=[op3_targets, dg.AssetDep(op3_descriptors, partition_mapping=dg.MultiToSingleDimensionPartitionMapping(
        partition_dimension_name="descriptor"))],
    group_name="op3", code_version=OP3_CODE, kinds={"python", "pytorch", "mlflow"},
    description="The two-stage ensemble predictor for one descriptor × seed, trained on the OP3 train compounds "
                "and scored on the held-out ones (through the compute resource; an MLflow run each).",
)
def op3_predictions(context: dg.AssetExecutionContext, config: PredictionConfig, storage: StorageResource,
                    compute: ComputeResource, mlflow: MlflowResource) -> dg.MaterializeResult:
    keys = context.partition_key.keys_by_dimension
    name, seed = keys["descriptor"], keys["seed"]
    out = storage.path("tables", "op3_predictions", f"descriptor={name}", f"seed={seed}", "part.parquet")
    with storage.partition_lock("op3_predictions", f"{name}|{seed}", context.log):
        (result,) = compute.run_many(context, [WorkUnit(f"{name}-{seed}", "cpb_assets.op3.workloads:predict", {
            "targets": str(storage.path("op3", "targets")), "descriptors": str(storage.path("op3", "descriptors", name)),
            "descriptor": name, "seed": int(seed), "freeze": DESCRIPTORS[name][1],
            "config": {"epochs": config.epochs, "ranks": tuple(config.ranks)},
            "out": str(out), "predictions": str(storage.path("op3", "predictions", f"{name}-{seed}.npy")),
            "mlflow": {**mlflow.worker_spec(MLFLOW_EXPERIMENT), "run_name": f"op3 {name} seed {seed}"},
        }, PREDICT_REQUEST)])
    meta = {m: round(v, 5) for m, v in result["metrics"].items()}
    if result.get("mlflow_run_id"):
        meta.update(mlflow.run_metadata(result["experiment_id"], result["mlflow_run_id"]))
    return dg.MaterializeResult(metadata={**meta, "n_test": result["n_test"], "seconds": result["seconds"],
                                          "compute_mode": compute.mode})


class Op3ResultsConfig(dg.Config):
    seeds: list[str] = DEMO_SEEDS


@dg.asset(
    deps=[dg.AssetDep(op3_predictions, partition_mapping=dg.AllPartitionMapping())],
    group_name="op3", code_version=OP3_CODE, kinds={"python", "duckdb"},
    description="Per descriptor: MRRMSE, MAE, Pearson, Spearman, cosine — mean ± SD over seeds and a cluster "
                "bootstrap by compound (cell type inner stratum); view `op3_results`; bar plot with the paper's "
                "reference MRRMSE beside ours.",
)
def op3_results(context: dg.AssetExecutionContext, config: Op3ResultsConfig, storage: StorageResource,
                catalog: CatalogResource) -> dg.MaterializeResult:
    files = sorted(storage.path("tables", "op3_predictions").glob("descriptor=*/seed=*/part.parquet"))
    rows = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else pd.DataFrame()
    if rows.empty:
        raise dg.Failure(description="no op3_predictions yet")
    rows = rows[rows["seed"].astype(str).isin(config.seeds)]
    table = results_table(rows)
    write_parquet(table, storage.table_path("op3_results"))
    png = storage.path("reports", "op3", "op3_results.png")
    results_plot(table, png)
    catalog.refresh()
    md = table[table["metric"] == "mrrmse"][["descriptor", "n_seeds", "mean", "sd", "lo", "hi", "reference"]]
    return dg.MaterializeResult(metadata={
        "descriptors": int(table["descriptor"].nunique()), "seeds": dg.MetadataValue.json(sorted(config.seeds)),
        "mrrmse": dg.MetadataValue.md(md.round(4).to_markdown(index=False)),
        "plot": dg.MetadataValue.md(f"![op3 results]({png.as_uri()})"),
        "plot_path": dg.MetadataValue.path(str(png)),
    })


OP3_ASSETS = [op3_targets, op3_descriptors, op3_predictions, op3_results]
__all__ = ["OP3_ASSETS", "REFERENCE_MRRMSE", "METRICS"]
