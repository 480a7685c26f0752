"""Agreement assets (METHODS §4): matched conditions, agreement scores, the report.

Partitions: one per dataset pair ``a__b`` (a < b; 78 pairs of the 13 datasets). Lineage to the DE
layer: a pair partition reads the ``group`` DE partitions of its two datasets
(:class:`PairToDatasetGroupMapping`); ``match_candidates`` (the global stage 1) reads every group
DE partition.
"""

import itertools
import time
from datetime import datetime
from typing import Optional

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow.dataset as pads
from dagster._core.definitions.partitions.mapping.partition_mapping import UpstreamPartitionsResult

from cpb_assets.agreement import matching
from cpb_assets.agreement.columns import SCORE_COLUMNS, STRENGTH_COLUMNS
from cpb_assets.datasets import DATASETS, dataset_partitions
from cpb_assets.effects.assets import de_table
from cpb_assets.versioning import code_version
from cpb_resources.catalog import CatalogResource
from cpb_resources.compute import ComputeResource, ResourceRequest
from cpb_resources.storage import StorageResource, write_parquet

PAIRS = [matching.pair_key(a, b) for a, b in itertools.combinations(sorted(DATASETS), 2)]
pair_partitions = dg.StaticPartitionsDefinition(PAIRS)
# scoring holds both datasets' rows of the matched contexts as dense (rows × genes) arrays
AGREEMENT_REQUEST = ResourceRequest(cpus=1, mem_mb=8192, time_min=60)
CONDITION_COLUMNS = ["stratum", "contrast_id", "pubchem_cid", "cell_type", "time_h", "dose_uM"]


class PairToDatasetGroupMapping(dg.PartitionMapping):
    """Pair partition ``a__b`` ← the ``group`` DE partitions ``a|group`` and ``b|group``.

    Dagster has no built-in mapping from a static pair key to two keys of a multi-partitioned
    upstream. Runs (materialize, launch, staleness in the process) use this mapping; the UI's
    remote asset graph only serializes built-in mappings and draws the default there.
    """

    def validate_partition_mapping(self, upstream_partitions_def, downstream_partitions_def) -> None:
        if not isinstance(upstream_partitions_def, dg.MultiPartitionsDefinition):
            raise dg.DagsterInvalidDefinitionError("upstream must be the (dataset, mode) MultiPartitionsDefinition")
        if not isinstance(downstream_partitions_def, dg.StaticPartitionsDefinition):
            raise dg.DagsterInvalidDefinitionError("downstream must be the static dataset-pair partitions")

    @staticmethod
    def _upstream_keys(pair: str) -> list[dg.MultiPartitionKey]:
        return [dg.MultiPartitionKey({"dataset": ds, "mode": "group"}) for ds in matching.split_pair(pair)]

    def get_upstream_mapped_partitions_result_for_partitions(
            self, downstream_partitions_subset, downstream_partitions_def, upstream_partitions_def,
            current_time: Optional[datetime] = None, dynamic_partitions_store=None) -> UpstreamPartitionsResult:
        keys = set()
        if downstream_partitions_subset is not None:
            for pair in downstream_partitions_subset.get_partition_keys():
                keys.update(self._upstream_keys(pair))
        return UpstreamPartitionsResult(
            partitions_subset=upstream_partitions_def.empty_subset().with_partition_keys(keys),
            required_but_nonexistent_subset=upstream_partitions_def.empty_subset())

    def get_downstream_partitions_for_partitions(
            self, upstream_partitions_subset, upstream_partitions_def, downstream_partitions_def,
            current_time: Optional[datetime] = None, dynamic_partitions_store=None):
        down = set()
        for key in upstream_partitions_subset.get_partition_keys():
            key = key if isinstance(key, dg.MultiPartitionKey) else upstream_partitions_def.get_partition_key_from_str(key)
            dims = key.keys_by_dimension
            if dims["mode"] != "group":
                continue
            down.update(p for p in downstream_partitions_def.get_partition_keys()
                        if dims["dataset"] in matching.split_pair(p))
        return downstream_partitions_def.empty_subset().with_partition_keys(down)

    @property
    def description(self) -> str:
        return "dataset pair a__b reads the group DE partitions of a and b"


PAIR_DE_MAPPING = PairToDatasetGroupMapping()


def _de_folder(storage: StorageResource, ds: str):
    return storage.de_dir(ds, "group")


def read_conditions(storage: StorageResource, datasets) -> tuple[pd.DataFrame, list[str]]:
    """Eligible condition rows of the group DE partitions on disk; and the datasets without one."""
    frames, missing = [], []
    for ds in datasets:
        files = sorted(_de_folder(storage, ds).glob("*.parquet"))
        if not files:
            missing.append(ds)
            continue
        table = pads.dataset([str(f) for f in files], format="parquet").to_table(columns=CONDITION_COLUMNS)
        frames.append(matching.condition_rows(table.to_pandas().drop_duplicates(["stratum", "contrast_id"]), ds))
    rows = pd.concat(frames, ignore_index=True) if frames else matching.condition_rows(pd.DataFrame())
    return rows, missing


@dg.asset(
    deps=[de_table],
    group_name="agreement",
    code_version=code_version("cpb_assets.agreement.matching"),
    kinds={"python", "duckdb"},
    description="Stage 1 of cross-dataset matching over every group DE partition: eligible condition rows "
                "(view `match_rows`, with `retained`) and every raw MNN dose edge of every dataset pair with the "
                "L1000 Phase I–II suppression flag (view `match_candidates`).",
)
def match_candidates(context: dg.AssetExecutionContext, storage: StorageResource,
                     catalog: CatalogResource) -> dg.MaterializeResult:
    t0 = time.perf_counter()
    rows, missing = read_conditions(storage, DATASETS)
    if missing:
        context.log.warning(f"no group DE partition on disk for {missing}: they take part with no rows")
    edges = matching.stage1(rows)
    kept = matching.retained_rows(rows, edges)
    rows = rows.assign(retained=rows["row_id"].isin(set(kept["row_id"])))
    write_parquet(rows, storage.path("tables", "match_rows", "part.parquet"))
    write_parquet(edges, storage.path("tables", "match_candidates", "part.parquet"))
    catalog.refresh()
    per_pair = (edges.groupby(["dataset_a", "dataset_b"]).agg(edges=("row_a", "size"),
                                                              suppressed=("suppressed", "sum"),
                                                              cids=("pubchem_cid", "nunique")).reset_index())
    return dg.MaterializeResult(metadata={
        "condition_rows": len(rows), "retained_rows": int(rows["retained"].sum()), "edges": len(edges),
        "suppressed_edges": int(edges["suppressed"].sum()), "datasets_without_de": dg.MetadataValue.json(missing),
        "edges_per_pair": dg.MetadataValue.md(per_pair.to_markdown(index=False) if len(per_pair) else "none"),
        "seconds": round(time.perf_counter() - t0, 2),
    })


@dg.asset(
    partitions_def=pair_partitions,
    deps=[match_candidates, dg.AssetDep(de_table, partition_mapping=PAIR_DE_MAPPING)],
    group_name="agreement",
    code_version=code_version("cpb_assets.agreement.matching"),
    kinds={"python", "duckdb"},
    description="Matched conditions of one dataset pair (view `matched_conditions`): its stage-1 MNN edges "
                "(stage 1, with `suppressed`) and its stage-2 matches in (cell_type, time) strata with ≥ 10 "
                "distinct CIDs (stage 2).",
)
def matched_conditions(context: dg.AssetExecutionContext, storage: StorageResource,
                       catalog: CatalogResource) -> dg.MaterializeResult:
    pair = context.partition_key
    a, b = matching.split_pair(pair)
    rows = pd.read_parquet(storage.path("tables", "match_rows", "part.parquet"))
    edges1 = pd.read_parquet(storage.path("tables", "match_candidates", "part.parquet"),
                             filters=[("dataset_a", "==", a), ("dataset_b", "==", b)])
    edges2 = matching.stage2(rows.loc[rows["retained"]], a, b)
    table = matching.matched_table(edges1, edges2, a, b)
    write_parquet(table, storage.path("tables", "matched_conditions", f"pair={pair}", "part.parquet"))
    catalog.refresh()
    two = table.loc[table["stage"] == 2]
    strata = (two.groupby(["cell_type", "time_h"]).agg(matches=("row_a", "size"), cids=("pubchem_cid", "nunique"))
              .reset_index())
    return dg.MaterializeResult(metadata={
        "stage1_edges": int((table["stage"] == 1).sum()), "stage1_suppressed": int(table["suppressed"].sum()),
        "stage2_matches": len(two), "stage2_cids": int(two["pubchem_cid"].nunique()),
        "strata": dg.MetadataValue.md(strata.to_markdown(index=False) if len(strata) else "no stratum kept"),
    })


@dg.asset_check(asset=matched_conditions, name="matched_conditions_rules", blocking=True,
                partitions_def=pair_partitions,
                description="Stage-2 matches: fold ≤ 10 (+1e-12), same CID/cell_type/time on both sides, ≥ 10 CIDs "
                            "per stratum, no suppressed row, no duplicate pair of contrasts.")
def matched_conditions_rules(context: dg.AssetCheckExecutionContext, storage: StorageResource
                             ) -> dg.AssetCheckResult:
    pair = context.partition_key
    table = pd.read_parquet(storage.path("tables", "matched_conditions", f"pair={pair}", "part.parquet"))
    problems = check_matched(table)
    return dg.AssetCheckResult(passed=not problems, metadata={"rows": len(table), "problems": problems})


def check_matched(table: pd.DataFrame) -> list[str]:
    """Rule violations of one ``matched_conditions`` partition (empty list: none)."""
    problems = []
    two = table.loc[table["stage"] == 2]
    if (table["fold"] > matching.MAX_FOLD + matching.FOLD_TOL).any():
        problems.append("fold above 10")
    if len(two) and (two.groupby(["cell_type", "time_key"])["pubchem_cid"].nunique() < matching.MIN_STRATUM_CIDS).any():
        problems.append("stage-2 stratum with fewer than 10 CIDs")
    if two["suppressed"].any():
        problems.append("suppressed stage-2 row")
    if two.duplicated(["row_a", "row_b"]).any():
        problems.append("duplicate stage-2 pair")
    if (table["dataset_a"] >= table["dataset_b"]).any():
        problems.append("dataset_a not before dataset_b")
    fold = np.maximum(table["dose_a"] / table["dose_b"], table["dose_b"] / table["dose_a"])
    if not np.allclose(fold, table["fold"], rtol=1e-12, atol=0):
        problems.append("fold differs from the doses")
    return problems


@dg.asset(
    partitions_def=pair_partitions,
    deps=[matched_conditions, dg.AssetDep(de_table, partition_mapping=PAIR_DE_MAPPING)],
    group_name="agreement",
    code_version=code_version("cpb_assets.agreement.workloads", "cpb_assets.agreement.metrics",
                              "cpb_assets.agreement.baselines", "cpb_assets.agreement.strength",
                              "cpb_assets.agreement.matching"),
    kinds={"python", "duckdb"},
    description="Every METHODS §4 metric of every stage-2 match of one dataset pair, both DEG variants, the "
                "same-context different-compound baselines and adjusted scores (view `agreement_pairs`), and the "
                "strength inputs (view `agreement_strength`). Runs on the compute resource.",
)
def agreement_scores(context: dg.AssetExecutionContext, storage: StorageResource, catalog: CatalogResource,
                     compute: ComputeResource) -> dg.MaterializeResult:
    pair = context.partition_key
    a, b = matching.split_pair(pair)
    t0 = time.perf_counter()
    matched_path = storage.path("tables", "matched_conditions", f"pair={pair}", "part.parquet")
    scores_out = storage.path("tables", "agreement_pairs", f"pair={pair}", "part.parquet")
    strength_out = storage.path("tables", "agreement_strength", f"pair={pair}", "part.parquet")
    n_matched = int((pd.read_parquet(matched_path, columns=["stage"])["stage"] == 2).sum())
    compute_meta = {}
    if n_matched:
        result = compute.run(context, "cpb_assets.agreement.workloads:score_pair",
                             {"matched": str(matched_path), "de_a": str(_de_folder(storage, a)),
                              "de_b": str(_de_folder(storage, b)), "scores_out": str(scores_out),
                              "strength_out": str(strength_out)}, request=AGREEMENT_REQUEST)
        compute_meta = {"compute_mode": compute.mode, "slurm_job_id": str(result["compute"].get("slurm_job_id") or "")}
    else:  # nothing matched: an empty partition, no compute job
        write_parquet(pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in SCORE_COLUMNS}), scores_out)
        write_parquet(pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in STRENGTH_COLUMNS}), strength_out)
    catalog.refresh()
    scores = pd.read_parquet(scores_out)
    summary = (scores.groupby(["metric", "variant"], sort=False)[["observed", "baseline", "adjusted"]].mean()
               .round(3).reset_index()) if len(scores) else pd.DataFrame()
    return dg.MaterializeResult(metadata={
        "matched_pairs": n_matched, "score_rows": len(scores),
        "mean_scores": dg.MetadataValue.md(summary.to_markdown(index=False) if len(summary) else "no matches"),
        "seconds": round(time.perf_counter() - t0, 2), **compute_meta,
    })


def _dtype(col: str) -> str:
    return "object" if col in {"dataset_a", "dataset_b", "contrast_a", "contrast_b", "stratum_a", "stratum_b",
                               "cell_type", "pubchem_cid", "metric", "variant"} else "float64"


SCORE_RANGES = {"spearman_logfc": (-1, 1), "spearman_t": (-1, 1), "deg_spearman": (-1, 1)}


@dg.asset_check(asset=agreement_scores, name="agreement_scores_ranges", blocking=True,
                partitions_def=pair_partitions,
                description="Scores in their ranges (Spearman in [-1, 1], overlaps and direction in [0, 1]), "
                            "adjusted = observed − baseline wherever both are defined, every metric × variant "
                            "present for every match.")
def agreement_scores_ranges(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
    pair = context.partition_key
    scores = pd.read_parquet(storage.path("tables", "agreement_pairs", f"pair={pair}", "part.parquet"))
    problems = check_scores(scores)
    return dg.AssetCheckResult(passed=not problems, metadata={"rows": len(scores), "problems": problems})


def check_scores(scores: pd.DataFrame) -> list[str]:
    """Rule violations of one ``agreement_pairs`` partition (empty list: none)."""
    from cpb_assets.agreement.metrics import metric_variants

    problems = []
    for col in ("observed", "baseline", "baseline_a", "baseline_b"):
        lo = scores["metric"].map(lambda m: SCORE_RANGES.get(m, (0, 1))[0])
        hi = scores["metric"].map(lambda m: SCORE_RANGES.get(m, (0, 1))[1])
        v = scores[col]
        if ((v < lo - 1e-12) | (v > hi + 1e-12)).any():
            problems.append(f"{col} outside its range")
    both = scores["observed"].notna() & scores["baseline"].notna()
    if not np.allclose(scores.loc[both, "adjusted"], scores.loc[both, "observed"] - scores.loc[both, "baseline"]):
        problems.append("adjusted ≠ observed − baseline")
    if scores.loc[~both, "adjusted"].notna().any():
        problems.append("adjusted defined without observed and baseline")
    if len(scores):
        per_match = scores.groupby(["contrast_a", "contrast_b"]).size()
        if (per_match != len(metric_variants())).any():
            problems.append("a match lacks some metric × variant rows")
    return problems



def _read_tables(storage: StorageResource, table: str) -> pd.DataFrame:
    """Every Parquet file of one table (any hive layout), hive keys as columns; empty when none."""
    files = sorted(storage.path("tables", table).glob("**/*.parquet"))
    if not files:
        return pd.DataFrame()
    df = pads.dataset([str(f) for f in files], format="parquet", partitioning="hive").to_table().to_pandas()
    for col in df.columns:  # hive keys arrive as dictionaries
        if isinstance(df[col].dtype, pd.CategoricalDtype):
            df[col] = df[col].astype(object)
    return df


# ------------------------------------------------------------------ retrieval, replicates, bootstrap
def _sep_folder(storage: StorageResource, ds: str):
    return storage.de_dir(ds, "sep")


def _empty(columns) -> pd.DataFrame:
    from cpb_assets.agreement.bootstrap import typed_frame

    return typed_frame(pd.DataFrame(columns=list(columns)))


@dg.asset(
    partitions_def=pair_partitions,
    deps=[matched_conditions, match_candidates, dg.AssetDep(de_table, partition_mapping=PAIR_DE_MAPPING)],
    group_name="agreement",
    code_version=code_version("cpb_assets.agreement.retrieval", "cpb_assets.agreement.baselines",
                              "cpb_assets.agreement.matching", "cpb_assets.agreement.workloads"),
    kinds={"python", "duckdb"},
    description="Cross-dataset logFC retrieval of one dataset pair (view `retrieval`, one row per query × positive "
                "definition × similarity): normalized best-positive rank, injected-centroid baseline rank, "
                "adjusted. Runs on the compute resource.",
)
def retrieval_scores(context: dg.AssetExecutionContext, storage: StorageResource, catalog: CatalogResource,
                     compute: ComputeResource) -> dg.MaterializeResult:
    from cpb_assets.agreement import retrieval

    pair = context.partition_key
    a, b = matching.split_pair(pair)
    t0 = time.perf_counter()
    matched_path = storage.path("tables", "matched_conditions", f"pair={pair}", "part.parquet")
    out = storage.path("tables", "retrieval", f"pair={pair}", "part.parquet")
    n_matched = int((pd.read_parquet(matched_path, columns=["stage"])["stage"] == 2).sum())
    compute_meta = {}
    if n_matched:
        result = compute.run(context, "cpb_assets.agreement.retrieval:score_pair_retrieval",
                             {"matched": str(matched_path),
                              "match_rows": str(storage.path("tables", "match_rows", "part.parquet")),
                              "de_a": str(_de_folder(storage, a)), "de_b": str(_de_folder(storage, b)),
                              "dataset_a": a, "dataset_b": b, "out": str(out)}, request=AGREEMENT_REQUEST)
        compute_meta = {"compute_mode": compute.mode, "slurm_job_id": str(result["compute"].get("slurm_job_id") or "")}
    else:
        write_parquet(_empty(retrieval.RETRIEVAL_COLUMNS), out)
    catalog.refresh()
    df = pd.read_parquet(out)
    summary = retrieval.summarize(df).round(3)
    return dg.MaterializeResult(metadata={
        "queries": int(df["query_row"].nunique()) if len(df) else 0, "rows": len(df),
        "summary": dg.MetadataValue.md(summary.to_markdown(index=False) if len(summary) else "no stratum"),
        "seconds": round(time.perf_counter() - t0, 2), **compute_meta,
    })


def check_retrieval(df: pd.DataFrame) -> list[str]:
    """Rule violations of one retrieval table (empty list: none)."""
    problems = []
    for col in ("observed", "baseline"):
        v = df[col].astype(float)
        if ((v < -1e-12) | (v > 1 + 1e-12)).any():
            problems.append(f"{col} outside [0, 1]")
    if (df["rank"] > df["n_candidates"]).any() or (df["rank"] < 1).any():
        problems.append("rank outside 1..N")
    if ((df["n_positives"] < 1) | (df["n_candidates"] - df["n_positives"] < 1)).any():
        problems.append("query without a positive or without a negative")
    both = df["observed"].notna() & df["baseline"].notna()
    if not np.allclose(df.loc[both, "adjusted"], df.loc[both, "observed"] - df.loc[both, "baseline"]):
        problems.append("adjusted ≠ observed − baseline")
    if (df["direction"] == "within").any() or (df["query_dataset"] == df["target_dataset"]).any():
        problems.append("a query retrieved within its own dataset")
    return problems


@dg.asset_check(asset=retrieval_scores, name="retrieval_ranks", blocking=True, partitions_def=pair_partitions,
                description="Normalized ranks in [0, 1], 1 ≤ rank ≤ N, every query with ≥ 1 positive and ≥ 1 "
                            "negative, adjusted = observed − baseline, queries only across the two datasets.")
def retrieval_ranks(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
    df = pd.read_parquet(storage.path("tables", "retrieval", f"pair={context.partition_key}", "part.parquet"))
    problems = check_retrieval(df)
    return dg.AssetCheckResult(passed=not problems, metadata={"rows": len(df), "problems": problems})


@dg.asset(
    partitions_def=dataset_partitions,
    deps=[dg.AssetDep(de_table, partition_mapping=dg.MultiToSingleDimensionPartitionMapping(
        partition_dimension_name="dataset"))],
    group_name="agreement",
    code_version=code_version("cpb_assets.agreement.replicates", "cpb_assets.agreement.retrieval",
                              "cpb_assets.agreement.metrics", "cpb_assets.agreement.baselines",
                              "cpb_assets.agreement.matching"),
    kinds={"python", "duckdb"},
    description="Within-dataset replicate agreement from the sep DE rows (view `replicate_agreement`, one row per "
                "condition × metric × variant: cyclic replicate pairs, NaN-skipping baselines) and replicate "
                "retrieval (view `replicate_retrieval`). Reads the dataset's sep DE partition. Runs on the compute "
                "resource.",
)
def replicate_agreement(context: dg.AssetExecutionContext, storage: StorageResource, catalog: CatalogResource,
                        compute: ComputeResource) -> dg.MaterializeResult:
    from cpb_assets.agreement import replicates, retrieval

    ds = context.partition_key
    t0 = time.perf_counter()
    cond_out = storage.path("tables", "replicate_agreement", f"dataset={ds}", "part.parquet")
    ret_out = storage.path("tables", "replicate_retrieval", f"dataset={ds}", "part.parquet")
    compute_meta = {}
    if list(_sep_folder(storage, ds).glob("*.parquet")):
        result = compute.run(context, "cpb_assets.agreement.replicates:score_dataset",
                             {"dataset": ds, "de_sep": str(_sep_folder(storage, ds)),
                              "conditions_out": str(cond_out), "retrieval_out": str(ret_out)},
                             request=AGREEMENT_REQUEST)
        compute_meta = {"compute_mode": compute.mode, "slurm_job_id": str(result["compute"].get("slurm_job_id") or "")}
    else:
        context.log.warning(f"no sep DE partition on disk for {ds}: empty replicate tables")
        write_parquet(_empty([c for c in replicates.REPLICATE_COLUMNS if c != "dataset"]), cond_out)
        write_parquet(_empty(retrieval.RETRIEVAL_COLUMNS), ret_out)
    catalog.refresh()
    conds = pd.read_parquet(cond_out)
    summary = (conds.groupby(["metric", "variant"], sort=False)[["observed", "baseline", "adjusted"]].mean()
               .round(3).reset_index()) if len(conds) else pd.DataFrame()
    return dg.MaterializeResult(metadata={
        "conditions": int(conds[["cell_type", "pubchem_cid", "time_h", "dose_uM"]].drop_duplicates().shape[0])
        if len(conds) else 0,
        "rows": len(conds), "retrieval_rows": len(pd.read_parquet(ret_out, columns=["query_row"])),
        "mean_scores": dg.MetadataValue.md(summary.to_markdown(index=False) if len(summary) else "no replicates"),
        "seconds": round(time.perf_counter() - t0, 2), **compute_meta,
    })


@dg.asset_check(asset=replicate_agreement, name="replicate_agreement_rules", blocking=True,
                partitions_def=dataset_partitions,
                description="Every condition has ≥ 2 replicates and its cyclic pair count (1 for two, n otherwise); "
                            "scores in range; adjusted = observed − baseline per pair mean; retrieval never "
                            "retrieves the query itself (N = stratum rows − 1 at most).")
def replicate_agreement_rules(context: dg.AssetCheckExecutionContext, storage: StorageResource
                              ) -> dg.AssetCheckResult:
    ds = context.partition_key
    conds = pd.read_parquet(storage.path("tables", "replicate_agreement", f"dataset={ds}", "part.parquet"))
    ret = pd.read_parquet(storage.path("tables", "replicate_retrieval", f"dataset={ds}", "part.parquet"))
    problems = []
    if (conds["n_replicates"] < 2).any():
        problems.append("condition with fewer than 2 replicates")
    expect = np.where(conds["n_replicates"] == 2, 1, conds["n_replicates"])
    if (conds["n_pairs"] != expect).any():
        problems.append("pair count differs from the cyclic rule")
    if len(conds):
        lo = conds["metric"].map(lambda m: SCORE_RANGES.get(m, (0, 1))[0])
        hi = conds["metric"].map(lambda m: SCORE_RANGES.get(m, (0, 1))[1])
        for col in ("observed", "baseline"):
            if ((conds[col] < lo - 1e-12) | (conds[col] > hi + 1e-12)).any():
                problems.append(f"{col} outside its range")
    if len(ret):
        # every query of a stratum ranks the same pool less itself: one candidate count per stratum
        # (not every row becomes a query — it needs a positive — so the pool is not the query count)
        per_stratum = ret.groupby(["cell_type", "time_h", "similarity"])["n_candidates"].transform("nunique")
        if (per_stratum > 1).any():
            problems.append("queries of one stratum rank pools of different sizes")
        problems += [p for p in check_retrieval(ret.assign(direction="x", target_dataset="")) if "retrieved" not in p]
    return dg.AssetCheckResult(passed=not problems, metadata={"rows": len(conds), "retrieval_rows": len(ret),
                                                              "problems": problems})


def _write_bootstrap(storage: StorageResource, scope: str, key: str, table: pd.DataFrame):
    path = storage.path("tables", "bootstrap_summary", f"scope={scope}", f"key={key}", "part.parquet")
    return write_parquet(table, path)


def _bootstrap_metadata(table: pd.DataFrame, t0: float) -> dict:
    counts = table["method"].value_counts().to_dict() if len(table) else {}
    head = table.loc[table["column"] == "adjusted"].round(3).head(40)
    return {"cells": len(table), "methods": dg.MetadataValue.json({k: int(v) for k, v in counts.items()}),
            "adjusted": dg.MetadataValue.md(head.to_markdown(index=False) if len(head) else "no cell"),
            "seconds": round(time.perf_counter() - t0, 2)}


@dg.asset(
    partitions_def=pair_partitions,
    deps=[agreement_scores, retrieval_scores],
    group_name="agreement",
    code_version=code_version("cpb_assets.agreement.bootstrap", "cpb_assets.agreement.report"),
    kinds={"python", "duckdb"},
    description="Cluster BCa intervals (2,000 CID resamples, 95%) of every table cell of one dataset pair (view "
                "`bootstrap_summary`): pair and pair × cell line for every metric × variant × column (observed, "
                "baseline, adjusted, over drug-line-time rows), and retrieval with its nested mean.",
)
def bootstrap_summary(context: dg.AssetExecutionContext, storage: StorageResource,
                      catalog: CatalogResource) -> dg.MaterializeResult:
    from cpb_assets.agreement import bootstrap, report

    pair = context.partition_key
    t0 = time.perf_counter()
    scores = pd.read_parquet(storage.path("tables", "agreement_pairs", f"pair={pair}", "part.parquet"))
    ret = pd.read_parquet(storage.path("tables", "retrieval", f"pair={pair}", "part.parquet"))
    dlt = report.drug_line_time(scores).assign(pair=pair)
    ret = ret.assign(pair=pair, metric="retrieval_" + ret["similarity"].astype(str), variant=ret["positive"])
    table = pd.concat([
        bootstrap.bootstrap_cells(dlt, level="pair", group_cols=["pair"]),
        bootstrap.bootstrap_cells(dlt, level="pair_cell", group_cols=["pair", "cell_type"]),
        bootstrap.bootstrap_cells(ret, level="retrieval", group_cols=["pair"],
                                  inner_cols=["direction", "cell_type", "time_h"], outer_col="direction"),
    ], ignore_index=True)
    _write_bootstrap(storage, "pair", pair, table)
    catalog.refresh()
    return dg.MaterializeResult(metadata=_bootstrap_metadata(table, t0))


@dg.asset(
    partitions_def=dataset_partitions,
    deps=[replicate_agreement],
    group_name="agreement",
    code_version=code_version("cpb_assets.agreement.bootstrap"),
    kinds={"python", "duckdb"},
    description="Cluster BCa intervals of every replicate table cell of one dataset (view `bootstrap_summary`, "
                "levels `dataset` over condition rows and `replicate_retrieval` with the nested mean).",
)
def bootstrap_summary_replicates(context: dg.AssetExecutionContext, storage: StorageResource,
                                 catalog: CatalogResource) -> dg.MaterializeResult:
    from cpb_assets.agreement import bootstrap

    ds = context.partition_key
    t0 = time.perf_counter()
    conds = pd.read_parquet(storage.path("tables", "replicate_agreement", f"dataset={ds}", "part.parquet"))
    ret = pd.read_parquet(storage.path("tables", "replicate_retrieval", f"dataset={ds}", "part.parquet"))
    ret = ret.assign(dataset=ds, metric="retrieval_" + ret["similarity"].astype(str), variant=ret["positive"])
    table = pd.concat([
        bootstrap.bootstrap_cells(conds.assign(dataset=ds), level="dataset", group_cols=["dataset"]),
        bootstrap.bootstrap_cells(ret, level="replicate_retrieval", group_cols=["dataset"],
                                  inner_cols=["direction", "cell_type", "time_h"], outer_col="direction"),
    ], ignore_index=True)
    _write_bootstrap(storage, "dataset", ds, table)
    catalog.refresh()
    return dg.MaterializeResult(metadata=_bootstrap_metadata(table, t0))


def check_bootstrap(table: pd.DataFrame) -> list[str]:
    """Rule violations of one bootstrap summary partition (empty list: none)."""
    problems = []
    ok = table["method"] != "nan"
    if (table.loc[ok, "lo"] > table.loc[ok, "hi"]).any():
        problems.append("lo above hi")
    if table.loc[ok, ["lo", "hi", "estimate"]].isna().any().any():
        problems.append("missing bound on a bca/percentile cell")
    if (table.loc[ok, "n_clusters"] < 2).any():
        problems.append("interval from fewer than 2 clusters")
    if table.loc[~ok, ["lo", "hi"]].notna().any().any():
        problems.append("bounds on a nan cell")
    return problems


@dg.asset_check(asset=bootstrap_summary, name="bootstrap_summary_intervals", blocking=False,
                partitions_def=pair_partitions,
                description="lo ≤ hi and both finite on every bca/percentile cell, ≥ 2 clusters behind each "
                            "interval, no bounds on a nan cell.")
def bootstrap_summary_intervals(context: dg.AssetCheckExecutionContext, storage: StorageResource
                                ) -> dg.AssetCheckResult:
    table = pd.read_parquet(storage.path("tables", "bootstrap_summary", "scope=pair", f"key={context.partition_key}",
                                         "part.parquet"))
    problems = check_bootstrap(table)
    return dg.AssetCheckResult(passed=not problems, metadata={"cells": len(table), "problems": problems})


@dg.asset_check(asset=bootstrap_summary_replicates, name="bootstrap_replicates_intervals", blocking=False,
                partitions_def=dataset_partitions,
                description="The same interval rules for the replicate tables of one dataset.")
def bootstrap_replicates_intervals(context: dg.AssetCheckExecutionContext, storage: StorageResource
                                   ) -> dg.AssetCheckResult:
    table = pd.read_parquet(storage.path("tables", "bootstrap_summary", "scope=dataset",
                                         f"key={context.partition_key}", "part.parquet"))
    problems = check_bootstrap(table)
    return dg.AssetCheckResult(passed=not problems, metadata={"cells": len(table), "problems": problems})


STATS_ASSETS = [retrieval_scores, replicate_agreement, bootstrap_summary, bootstrap_summary_replicates]
STATS_CHECKS = [retrieval_ranks, replicate_agreement_rules, bootstrap_summary_intervals,
                bootstrap_replicates_intervals]


# what the report reads; the retrieval / replicate / bootstrap assets add their keys here (dg.AssetKey("..."))
AGREEMENT_REPORT_DEPS = [agreement_scores, retrieval_scores, replicate_agreement, bootstrap_summary,
                         bootstrap_summary_replicates]


@dg.asset(
    deps=AGREEMENT_REPORT_DEPS,
    group_name="agreement",
    code_version=code_version("cpb_assets.agreement.report", "cpb_assets.agreement.strength"),
    kinds={"python", "matplotlib"},
    description="Heatmaps (dataset × dataset: observed, baseline, adjusted) of the main metrics, replicate violins, "
                "the strength scatter (PNG under reports/agreement/, shown inline here) and Markdown tables in the "
                "layout of the paper's tables 4–10 (view `agreement_report_tables`).",
)
def agreement_report(context: dg.AssetExecutionContext, storage: StorageResource,
                     catalog: CatalogResource) -> dg.MaterializeResult:
    from cpb_assets.agreement import report, strength

    out_dir = storage.path("reports", "agreement")
    # the demo world writes its planted truth beside the sources: its figures say SYNTHETIC
    note = " — SYNTHETIC demo data" if storage.path("sources", "_truth").exists() else ""
    scores = _read_tables(storage, "agreement_pairs")
    summary = report.pair_summary(scores) if len(scores) else report.pair_summary(pd.DataFrame())
    bootstrap = _read_tables(storage, "bootstrap_summary")
    metadata, markdown = {}, ["# Cross-dataset and replicate agreement", "",
                              f"Source: the DE tables under {storage.root}{note}.", ""]
    filled_total = 0
    for metric, variant, title in report.MAIN_METRICS:
        png, filled = report.heatmap_figure(summary, metric, variant, title, note)
        filled_total += filled
        path = report.write_png(png, out_dir / f"heatmap_{metric}_{variant}.png")
        metadata[f"heatmap_{metric}"] = dg.MetadataValue.md(report.embed(png, title))
        metadata[f"heatmap_{metric}_path"] = dg.MetadataValue.path(str(path))
    units = strength.condition_dose_units(_read_tables(storage, "agreement_strength"))
    corr = strength.strength_correlation(units) if len(units) else {}
    png = report.strength_figure(units, corr, note)
    metadata["strength_scatter"] = dg.MetadataValue.md(report.embed(png, "strength"))
    metadata["strength_scatter_path"] = dg.MetadataValue.path(str(report.write_png(png, out_dir / "strength.png")))
    for number, (metric, variant, caption) in report.PAIR_TABLES.items():
        markdown += [report.markdown_table(summary, metric, variant, caption, number, bootstrap), ""]
    retrieval = report.retrieval_summary(bootstrap)
    if len(retrieval):
        metric, variant, title = report.RETRIEVAL_HEADLINE
        png, filled = report.heatmap_figure(retrieval, metric, variant, title, note)
        filled_total += filled
        metadata["heatmap_retrieval"] = dg.MetadataValue.md(report.embed(png, title))
        report.write_png(png, out_dir / f"heatmap_{metric}_{variant}.png")
        markdown += [report.markdown_table(retrieval, metric, variant, title, 9, bootstrap, level="retrieval"), ""]
    else:
        markdown += ["Table 9 (retrieval): no retrieval cells in `bootstrap_summary` yet.", ""]
    replicates = _read_tables(storage, "replicate_agreement")
    if {"dataset", "metric", "variant", "observed", "baseline"} <= set(replicates.columns):
        for metric, variant, title in (("deg_spearman", "p05", "Replicate DEG logFC Spearman"),
                                       ("direction", "p05", "Replicate direction agreement"),
                                       ("spearman_logfc", "all", "Replicate all-gene logFC Spearman")):
            png = report.violin_figure(replicates, metric, variant, title, note)
            metadata[f"violin_{metric}"] = dg.MetadataValue.md(report.embed(png, title))
            report.write_png(png, out_dir / f"violin_{metric}_{variant}.png")
        rep_summary = report.dataset_summary(replicates)
        for number, (metric, variant, caption) in report.REPLICATE_TABLES.items():
            markdown += [report.markdown_table(rep_summary, metric, variant, caption, number, bootstrap,
                                               level="dataset", unit="Dataset"), ""]
    else:
        markdown += ["Tables 7, 8, 10 (replicate agreement): no `replicate_agreement` table yet.", ""]
    text = "\n".join(markdown)
    from cpb_resources.storage import atomic_path
    with atomic_path(out_dir / "tables.md") as tmp:
        tmp.write_text(text)
    write_parquet(summary, storage.path("tables", "agreement_report", "part.parquet"))
    catalog.refresh()
    metadata.update({"tables": dg.MetadataValue.md(text), "tables_path": dg.MetadataValue.path(str(out_dir / "tables.md")),
                     "pairs_with_scores": int(summary[["dataset_a", "dataset_b"]].drop_duplicates().shape[0]),
                     "heatmap_cells_filled": filled_total,
                     "strength_rho_logfc": float(corr.get("rho_spearman_logfc", float("nan"))),
                     "strength_rho_t": float(corr.get("rho_spearman_t", float("nan"))),
                     "strength_units": int(len(units))})
    return dg.MaterializeResult(metadata=metadata)


@dg.asset_check(asset=agreement_report, name="agreement_report_heatmaps", blocking=False,
                description="Each main-metric heatmap PNG exists and at least one heatmap cell is filled whenever "
                            "some dataset pair has scores.")
def agreement_report_heatmaps(storage: StorageResource) -> dg.AssetCheckResult:
    from cpb_assets.agreement import report

    summary = pd.read_parquet(storage.path("tables", "agreement_report", "part.parquet"))
    missing = [m for m, v, _ in report.MAIN_METRICS
               if not storage.path("reports", "agreement", f"heatmap_{m}_{v}.png").exists()]
    has_scores = bool(len(summary) and summary["observed"].notna().any())
    return dg.AssetCheckResult(passed=not missing and (has_scores or summary.empty),
                               metadata={"missing_png": missing, "summary_rows": len(summary),
                                         "pairs_with_finite_scores": int(summary.loc[summary["observed"].notna(),
                                                                                    ["dataset_a", "dataset_b"]]
                                                                         .drop_duplicates().shape[0])})

# Everything of the stage that Definitions registers (other agreement modules add theirs here).
AGREEMENT_ASSETS = [match_candidates, matched_conditions, agreement_scores, *STATS_ASSETS, agreement_report]
AGREEMENT_CHECKS = [matched_conditions_rules, agreement_scores_ranges, *STATS_CHECKS, agreement_report_heatmaps]
