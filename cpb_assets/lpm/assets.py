"""LPM assets (METHODS §5): training tables, splits + shards, Morgan fingerprints, models."""
import shutil
import time
import uuid

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq

from cpb_assets.datasets import DATASETS, dataset_partitions
from cpb_assets.effects.assets import de_table
from cpb_assets.harmonize.assets import compound_registry
from cpb_assets.lpm import fingerprints as fpm
from cpb_assets.lpm import prepare, splits, tables
from cpb_assets.versioning import code_version
from cpb_resources.catalog import CatalogResource
from cpb_resources.compound_registry import CompoundRegistryResource
from cpb_resources.storage import StorageResource, atomic_path, write_parquet

LPM_TABLE_MODULES = ["cpb_assets.lpm.tables", "cpb_assets.lpm.splits"]
LPM_SPLIT_MODULES = ["cpb_assets.lpm.prepare", "cpb_assets.lpm.tables", "cpb_assets.lpm.splits"]


def lpm_table_dir(storage: StorageResource, ds: str):
    return storage.path("lpm", "table", f"dataset={ds}")


@dg.asset(
    partitions_def=dataset_partitions,
    # Dagster has no built-in mapping dataset -> (dataset, "group") of a multi-partitioned asset; the
    # dependency spans both modes of the dataset, the run reads only mode=group.
    deps=[dg.AssetDep(de_table, partition_mapping=dg.MultiToSingleDimensionPartitionMapping(
        partition_dimension_name="dataset"))],
    group_name="lpm",
    code_version=code_version(*LPM_TABLE_MODULES),
    kinds={"python", "parquet"},
    description="LPM training rows of one dataset from its `group` DE rows (value = logFC, log_dose = log10 µM, "
                "time h; missing CID / NaN rows dropped): long scalar rows and one multi-output row per condition "
                "under $CPB_HOME/lpm/table/dataset=<ds>/.",
)
def lpm_table(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    ds = context.partition_key
    t0 = time.perf_counter()
    folder = storage.de_dir(ds, "group")
    files = sorted(folder.glob("*.parquet"))
    if not files:
        raise dg.Failure(description=f"{ds}: no group DE table at {folder}; materialize de_table[{ds}|group] first")
    with atomic_path(lpm_table_dir(storage, ds), is_dir=True) as tmp:
        stats = tables.build_dataset_table(files, ds, tmp)
    context.log.info(f"lpm_table {ds}: {stats}")
    return dg.MaterializeResult(metadata={
        **{k: int(v) for k, v in stats.items()},
        "path": dg.MetadataValue.path(str(lpm_table_dir(storage, ds))),
        "seconds": round(time.perf_counter() - t0, 2),
    })


@dg.asset(
    deps=[compound_registry], group_name="lpm",
    code_version=code_version("cpb_assets.lpm.fingerprints", "cpb_assets.harmonize.compounds",
                              "cpb_resources.compound_registry"),
    kinds={"python", "rdkit"},
    description="Morgan fingerprints per PubChem CID (RDKit GetMorganGenerator: radius 2 / 128 bits for the LPM, "
                "radius 1 / 2,000 bits for OP3 descriptors), float32 bits from the source SMILES else PubChem's, "
                "no standardisation; zero vectors for Control and compounds without a valid structure. "
                "$CPB_HOME/lpm/fingerprints/<name>.parquet.",
)
def morgan_fingerprints(context: dg.AssetExecutionContext, storage: StorageResource,
                        compound_resolver: CompoundRegistryResource) -> dg.MaterializeResult:
    path = storage.table_path("compounds")
    if not path.exists():
        raise dg.Failure(description=f"the compound registry has not been materialized yet ({path})")
    registry = pd.read_parquet(path, columns=["dataset", "source_id", "smiles", "pubchem_cid"])
    pubchem = fpm.reference_smiles(compound_resolver.reference_path())
    structures = fpm.choose_structures(registry, pubchem)
    meta = {}
    for fp in fpm.FINGERPRINTS:
        table = fpm.fingerprint_table(structures, fp["radius"], fp["n_bits"])
        target = storage.path("lpm", "fingerprints", f"{fp['name']}.parquet")
        with atomic_path(target) as tmp:
            pq.write_table(table, tmp)
        meta[f"{fp['name']}_on_bits_mean"] = round(float(
            table["bits"].combine_chunks().flatten().to_numpy().reshape(len(table), -1).sum(1).mean()), 2)
    origin = structures["smiles_from"].value_counts().to_dict()
    return dg.MaterializeResult(metadata={
        "compounds": len(structures),
        "with_structure": int(structures["smiles"].notna().sum()),
        "smiles_from": dg.MetadataValue.json({str(k): int(v) for k, v in origin.items()}),
        **meta,
        "path": dg.MetadataValue.path(str(storage.path("lpm", "fingerprints"))),
    })


class LpmSplitConfig(dg.Config):
    """Shard sizes (METHODS §5: 200,000 scalar rows; about 8 million multi-output values)."""

    rows_per_shard: int = tables.SCALAR_ROWS_PER_SHARD
    values_per_shard: int = tables.MULTI_VALUES_PER_SHARD


@dg.asset(
    deps=[dg.AssetDep(lpm_table, partition_mapping=dg.AllPartitionMapping()), morgan_fingerprints],
    group_name="lpm",
    code_version=code_version(*LPM_SPLIT_MODULES),
    kinds={"python", "parquet", "duckdb"},
    description="Scalar split, molecule-holdout split (METHODS §5) and Bemis–Murcko scaffold split of every "
                "materialized lpm_table partition; split files and split-pure shards under $CPB_HOME/lpm/"
                "{splits,shards}; counts per dataset × split kind × split in the DuckDB view `lpm_split_counts`; "
                "split hashes in the metadata (recorded with every checkpoint).",
)
def lpm_split(context: dg.AssetExecutionContext, config: LpmSplitConfig, storage: StorageResource,
              catalog: CatalogResource) -> dg.MaterializeResult:
    t0 = time.perf_counter()
    table_dirs = {ds: lpm_table_dir(storage, ds) for ds in DATASETS
                  if (lpm_table_dir(storage, ds) / "multi.parquet").exists()}
    if not table_dirs:
        raise dg.Failure(description="no lpm_table partition has been materialized yet")
    fp_path = storage.path("lpm", "fingerprints", f"{fpm.LPM_FP['name']}.parquet")
    if not fp_path.exists():
        raise dg.Failure(description=f"morgan_fingerprints has not been materialized yet ({fp_path})")
    structures = pd.read_parquet(fp_path, columns=["pubchem_cid", "smiles"])
    scaffolds = {c: splits.murcko_scaffold(s) for c, s in zip(structures["pubchem_cid"], structures["smiles"])}
    staging = storage.path("work", "lpm_split", uuid.uuid4().hex[:12])
    try:
        result = prepare.prepare_splits(table_dirs, scaffolds, staging, rows_per_shard=config.rows_per_shard,
                                        values_per_shard=config.values_per_shard)
        leaks = prepare.check_all(staging)
        if any(v for r in leaks.values() for v in r.values()):
            raise dg.Failure(description=f"held-out units reach training: {leaks}")
        for part in ("splits", "shards"):
            with atomic_path(storage.path("lpm", part), is_dir=True) as tmp:
                tmp.rmdir()
                (staging / part).rename(tmp)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    counts = result["counts"]
    write_parquet(counts, storage.table_path("lpm_split_counts"))
    catalog.refresh()
    mol = pd.DataFrame.from_dict(result["molecule_datasets"], orient="index").rename_axis("dataset").reset_index()
    return dg.MaterializeResult(metadata={
        "split_hash": dg.MetadataValue.json(result["hashes"]),
        **{f"split_hash_{k}": v for k, v in result["hashes"].items()},
        "datasets": dg.MetadataValue.json(sorted(table_dirs)),
        "scalar_swaps": dg.MetadataValue.json(result["swaps"]),
        "scaffolds": dg.MetadataValue.json(result["scaffolds"]),
        "molecule_holdout": dg.MetadataValue.md(mol.to_markdown(index=False) if len(mol) else "(none)"),
        "counts": dg.MetadataValue.md(counts.to_markdown(index=False)),
        "shards": dg.MetadataValue.json({k: v["shards"] for k, v in result["manifest"].items()}),
        "path": dg.MetadataValue.path(str(storage.path("lpm"))),
        "seconds": round(time.perf_counter() - t0, 2),
    })


@dg.asset_check(asset=lpm_split, name="lpm_split_leakage", blocking=True,
                description="No held-out unit (scalar: dataset×context×perturbation; molecule-holdout: molecule "
                            "within its dataset; scaffold: any molecule of a held-out scaffold) is in a training "
                            "shard; val and test perturbations of the scalar split are disjoint; every held-out "
                            "molecule keeps a training copy in another dataset.")
def lpm_split_leakage(storage: StorageResource) -> dg.AssetCheckResult:
    root = storage.path("lpm")
    res = prepare.check_all(root)
    a = pd.read_parquet(root / "splits" / "molecule.parquet")
    h = pd.read_parquet(root / "splits" / "molecule_molecules.parquet")
    orphans = prepare.molecule_training_copies(a, h)
    n = {k: {kk: len(vv) for kk, vv in v.items()} for k, v in res.items()}
    passed = not any(v for r in res.values() for v in r.values()) and not orphans
    return dg.AssetCheckResult(passed=passed, metadata={
        "leaks": dg.MetadataValue.json(n), "held_out_without_training_copy": len(orphans),
        "examples": dg.MetadataValue.json({k: [list(map(str, x)) if isinstance(x, tuple) else str(x)
                                               for x in v["units"][:5]] for k, v in res.items()}),
    })


LPM_ASSETS = [lpm_table, morgan_fingerprints, lpm_split]
LPM_CHECKS = [lpm_split_leakage]


# -- models (h8): checkpoints, fine-tune / scratch runs, compound embeddings, results ---------------------
from cpb_assets.lpm import results as lpr  # noqa: E402
from cpb_assets.lpm.config import TrainConfig, paper_config, select_source  # noqa: E402
from cpb_resources.compute import ComputeResource, ResourceRequest, WorkUnit  # noqa: E402
from cpb_resources.mlflow import MlflowResource  # noqa: E402

LPM_MODEL_MODULES = ["cpb_assets.lpm.model", "cpb_assets.lpm.config", "cpb_assets.lpm.train", "cpb_assets.lpm.workloads",
                     "cpb_assets.lpm.results", "cpb_resources.mlflow"]
MLFLOW_EXPERIMENT = "cpb-lpm"
lpm_variant_partitions = dg.StaticPartitionsDefinition(list(lpr.CHECKPOINT_VARIANTS))
lpm_checkpoint_partitions = dg.MultiPartitionsDefinition({
    "variant": lpm_variant_partitions, "seed": dg.StaticPartitionsDefinition(lpr.SEEDS)})
lpm_target_partitions = dg.StaticPartitionsDefinition([d for d in DATASETS if d not in tables.MULTI_EXCLUDED])
lpm_finetuned_partitions = dg.MultiPartitionsDefinition({
    "dataset": lpm_target_partitions, "variant": dg.StaticPartitionsDefinition(list(lpr.FINETUNE_VARIANTS))})


class LpmTrainConfig(dg.Config):
    """Training settings of the LPM assets. Demo-sized by default; ``paper: true`` switches to METHODS §5
    (25 scalar / 200 multi-output epochs, effective batches 262,144 / 8,192 with micro-batches of 16,384 /
    4,096, the 10 seeds)."""

    paper: bool = False
    epochs_multi: int = 8
    epochs_scalar: int = 1
    batch_multi: int = 32
    batch_scalar: int = 4096
    micro_batch: int = 0
    seeds: list[str] = lpr.DEMO_SEEDS
    device: str = "auto"
    amp: bool = False
    compile: bool = False
    cpus: int = 1
    mem_mb: int = 4096
    time_min: int = 240
    gpus: int = 0
    fresh: bool = False

    def train_config(self, form: str, seed: str, **extra) -> dict:
        common = dict(seed=int(seed), device=self.device, amp=self.amp, compile=self.compile, **extra)
        if self.paper:
            cfg = paper_config(form, **common)
        else:
            cfg = TrainConfig(form=form, epochs=self.epochs_multi if form == "multi" else self.epochs_scalar,
                              batch_size=self.batch_multi if form == "multi" else self.batch_scalar,
                              micro_batch=self.micro_batch, **common)
        return dict(cfg.__dict__)

    @property
    def run_seeds(self) -> list[str]:
        return lpr.SEEDS if self.paper else list(self.seeds)

    @property
    def request(self) -> ResourceRequest:
        return ResourceRequest(cpus=self.cpus, mem_mb=self.mem_mb, time_min=self.time_min, gpus=self.gpus,
                               kind="gpu" if self.gpus else "cpu")


def _manifest(storage: StorageResource) -> dict:
    path = storage.path("lpm", "splits", "manifest.json")
    if not path.exists():
        raise dg.Failure(description=f"lpm_split has not been materialized yet ({path})")
    return splits.read_manifest(path.parent)


def _run_params(storage: StorageResource, mlflow: MlflowResource, manifest: dict, variant: lpr.Variant, seed: str,
                config: LpmTrainConfig, out_dir, *, target: str | None = None, **train_extra) -> dict:
    kind = manifest[variant.split_kind]
    fp = storage.path("lpm", "fingerprints", f"{fpm.LPM_FP['name']}.parquet") if variant.morgan else None
    if fp is not None and not fp.exists():
        raise dg.Failure(description=f"morgan_fingerprints has not been materialized yet ({fp})")
    datasets = [target] if target else (list(variant.datasets) if variant.datasets else None)
    tags = {"variant": variant.label, "variant_key": variant.key, "seed": seed, "form": variant.form,
            "split_kind": variant.split_kind, "target": target or "", "launched_by": "dagster"}
    return {
        "config": config.train_config(variant.form, seed, morgan=None if train_extra.get("init_checkpoint")
                                      else variant.morgan, **train_extra),
        "shard_root": str(storage.path("lpm", kind["shard_root"])), "form": variant.form,
        "datasets": datasets, "select_datasets": [target] if target else None,
        "fingerprints": str(fp) if fp is not None else None, "split_hash": kind["hash"],
        "out_dir": str(out_dir), "fresh": config.fresh,
        "mlflow": {**mlflow.worker_spec(MLFLOW_EXPERIMENT),
                   "run_name": f"{variant.key}{'-' + target if target else ''}-seed{seed}", "tags": tags},
    }


def _selection_md(selection: dict) -> str:
    rows = [(d, v["epoch"], round(v["val_rmse"], 4), round(v["test_rmse"], 4)) for d, v in sorted(selection.items())]
    return pd.DataFrame(rows, columns=["dataset", "epoch", "val_rmse", "test_rmse"]).to_markdown(index=False)


@dg.asset(
    partitions_def=lpm_checkpoint_partitions,
    deps=[lpm_split, morgan_fingerprints],
    group_name="lpm",
    code_version=code_version(*LPM_MODEL_MODULES),
    kinds={"pytorch", "mlflow"},
    description="One LPM training run per variant × seed (All, All Morgan fixed, All Morgan learned: multi-output "
                "on the molecule-holdout shards; Scalar L1000 / Scalar all data: the scalar LPM whose compound "
                "embeddings feed OP3). Epoch checkpoints (state dict + vocabularies + split hash) under "
                "$CPB_HOME/lpm/runs/<variant>/seed=<seed>/, per-dataset best-validation epochs, an MLflow run. "
                "Runs on the compute resource (GPU request from config); a killed job resumes from its last epoch.",
)
def lpm_checkpoint(context: dg.AssetExecutionContext, config: LpmTrainConfig, storage: StorageResource,
                   compute: ComputeResource, mlflow: MlflowResource) -> dg.MaterializeResult:
    keys = context.partition_key.keys_by_dimension
    variant, seed = lpr.CHECKPOINT_VARIANTS[keys["variant"]], keys["seed"]
    out_dir = lpr.run_dir(storage.path("lpm"), variant.key, seed)
    params = _run_params(storage, mlflow, _manifest(storage), variant, seed, config, out_dir)
    res = compute.run(context, "cpb_assets.lpm.workloads:train_runs", {"runs": [params]}, request=config.request)
    run = res["runs"][0]
    return dg.MaterializeResult(metadata={
        "variant": variant.label, "seed": int(seed), "split_hash": params["split_hash"],
        "epochs": run["epochs_done"], "resumed_from_epoch": run["resumed_from"],
        "best_epochs": dg.MetadataValue.md(_selection_md(run["selection"])),
        "samples_per_s": run["samples_per_s"], "values_per_s": run["values_per_s"],
        "path": dg.MetadataValue.path(run["out_dir"]), "compute_mode": compute.mode,
        **mlflow.run_metadata(run["experiment_id"], run["mlflow_run_id"]),
    })


@dg.asset(
    partitions_def=lpm_finetuned_partitions,
    deps=[dg.AssetDep(lpm_checkpoint, partition_mapping=dg.AllPartitionMapping()), lpm_split, morgan_fingerprints],
    group_name="lpm",
    code_version=code_version(*LPM_MODEL_MODULES),
    kinds={"pytorch", "mlflow"},
    description="Fine-tune / scratch runs on one target dataset (METHODS §5): FT variants load all weights of the "
                "source checkpoint with the best validation RMSE on the target over all seeds and epochs, freeze the "
                "perturbation embeddings, start a fresh optimizer and train on the target only; Scratch variants "
                "train on the target from random (or fixed Morgan) initialisation. Every seed keeps its "
                "best-validation epoch. $CPB_HOME/lpm/finetune/<dataset>/<variant>/seed=<seed>/.",
)
def lpm_finetuned(context: dg.AssetExecutionContext, config: LpmTrainConfig, storage: StorageResource,
                  compute: ComputeResource, mlflow: MlflowResource) -> dg.MaterializeResult:
    keys = context.partition_key.keys_by_dimension
    target, variant = keys["dataset"], lpr.FINETUNE_VARIANTS[keys["variant"]]
    manifest = _manifest(storage)
    if target not in manifest[variant.split_kind]["datasets"]:
        raise dg.Failure(description=f"{target} has no {variant.split_kind} shards (materialize its lpm_table)")
    lpm_root = storage.path("lpm")
    extra, source_meta = {}, {}
    if variant.source:
        histories = {int(s): lpr.read_json(lpr.run_dir(lpm_root, variant.source, s) / "history.json")
                     for s in config.run_seeds}
        histories = {s: h for s, h in histories.items() if h}
        best = select_source(histories, target)
        if best is None:
            raise dg.Failure(description=f"no finished lpm_checkpoint[{variant.source}|seed] run has a validation "
                                         f"RMSE on {target}; materialize those partitions first")
        src_seed, src_epoch, src_val = best
        ck = lpr.run_dir(lpm_root, variant.source, str(src_seed)) / f"epoch-{src_epoch:03d}.pt"
        extra = {"init_checkpoint": str(ck), "freeze_perturbations": variant.freeze}
        source_meta = {"source_variant": variant.source, "source_seed": src_seed, "source_epoch": src_epoch,
                       "source_val_rmse": round(src_val, 5)}
    runs = [_run_params(storage, mlflow, manifest, variant, s, config, lpr.run_dir(lpm_root, variant.key, s, target),
                        target=target, **extra) for s in config.run_seeds]
    # one unit per seed: side by side on SLURM (each its own job, GPU when configured)
    results = compute.run_many(context, [
        WorkUnit(f"seed-{p['config']['seed']}", "cpb_assets.lpm.workloads:train_runs", {"runs": [p]}, config.request)
        for p in runs])
    res = {"runs": [r["runs"][0] for r in results]}
    table = pd.DataFrame([{"seed": int(p["config"]["seed"]), "epoch": r["selection"].get(target, {}).get("epoch"),
                           "val_rmse": r["selection"].get(target, {}).get("val_rmse"),
                           "test_rmse": r["selection"].get(target, {}).get("test_rmse"),
                           "mlflow_run": mlflow.run_link(r["experiment_id"], r["mlflow_run_id"])}
                          for p, r in zip(runs, res["runs"])])
    rm = pd.to_numeric(table["test_rmse"], errors="coerce")
    return dg.MaterializeResult(metadata={
        "variant": variant.label, "target": target, "seeds": len(runs), **source_meta,
        "test_rmse_mean": float(rm.mean()) if rm.notna().any() else float("nan"),
        "test_rmse_sd": float(rm.std(ddof=1)) if rm.notna().sum() > 1 else float("nan"),
        "runs": dg.MetadataValue.md(table.to_markdown(index=False)),
        "mlflow_run_ids": dg.MetadataValue.json([r["mlflow_run_id"] for r in res["runs"]]),
        "path": dg.MetadataValue.path(str(lpm_root / "finetune" / target / variant.key)),
    })


class CompoundEmbeddingConfig(dg.Config):
    """Which checkpoint the vectors come from (METHODS §5: the scalar LPM at epoch 20; capped at the last)."""

    seed: str = "13"
    epoch: int = 20


@dg.asset(
    partitions_def=lpm_variant_partitions,
    deps=[dg.AssetDep(lpm_checkpoint, partition_mapping=dg.MultiToSingleDimensionPartitionMapping(
        partition_dimension_name="variant"))],
    group_name="lpm",
    code_version=code_version(*LPM_MODEL_MODULES),
    kinds={"pytorch", "parquet", "duckdb"},
    description="Perturbation (compound) embeddings of one lpm_checkpoint variant: the 128-d rows of the "
                "perturbation table at the configured epoch (default 20, capped at the last) and seed, one row per "
                "PubChem CID (Control excluded) with its SMILES and whether the CID was in training rows "
                "(DuckDB view `compound_embeddings`).",
)
def compound_embeddings(context: dg.AssetExecutionContext, config: CompoundEmbeddingConfig,
                        storage: StorageResource, catalog: CatalogResource) -> dg.MaterializeResult:
    variant = lpr.CHECKPOINT_VARIANTS[context.partition_key]
    folder = lpr.run_dir(storage.path("lpm"), variant.key, config.seed)
    epochs = sorted(int(p.stem.split("-")[1]) for p in folder.glob("epoch-*.pt"))
    if not epochs:
        raise dg.Failure(description=f"no checkpoint of lpm_checkpoint[{variant.key}|{config.seed}] at {folder}")
    epoch = max(e for e in epochs if e <= config.epoch) if min(epochs) <= config.epoch else epochs[0]
    from cpb_assets.lpm.train import load_checkpoint  # torch: imported by the step, not by the definitions

    ck = load_checkpoint(folder / f"epoch-{epoch:03d}.pt")
    weight = ck["model"]["perturbation_emb.bag.weight"].float().numpy()
    cids = list(ck["vocab"]["perturbations"])
    fp_path = storage.path("lpm", "fingerprints", f"{fpm.LPM_FP['name']}.parquet")
    smiles = dict(pd.read_parquet(fp_path, columns=["pubchem_cid", "smiles"]).itertuples(index=False)) \
        if fp_path.exists() else {}
    df = pd.DataFrame({"pubchem_cid": cids[1:], "smiles": [smiles.get(c) for c in cids[1:]],
                       "seed": int(config.seed), "epoch": epoch, "split_hash": ck.get("split_hash", ""),
                       "embedding": list(weight[1:].astype("float32"))})
    write_parquet(df, storage.path("tables", "compound_embeddings", f"variant={variant.key}", "part.parquet"))
    catalog.refresh()
    return dg.MaterializeResult(metadata={
        "variant": variant.label, "compounds": len(df), "dim": int(weight.shape[1]), "seed": int(config.seed),
        "epoch": epoch, "split_hash": ck.get("split_hash", ""),
        "mean_norm": round(float((weight[1:] ** 2).sum(1).mean() ** 0.5), 4) if len(df) else 0.0,
    })


class LpmResultsConfig(dg.Config):
    """Seeds to summarise (demo: 13 and 17; ``paper: true``: all 10)."""

    paper: bool = False
    seeds: list[str] = lpr.DEMO_SEEDS


@dg.asset(
    deps=[dg.AssetDep(lpm_checkpoint, partition_mapping=dg.AllPartitionMapping()),
          dg.AssetDep(lpm_finetuned, partition_mapping=dg.AllPartitionMapping())],
    group_name="lpm",
    code_version=code_version("cpb_assets.lpm.results"),
    kinds={"python", "duckdb"},
    description="Test RMSE mean ± sample SD over seeds per dataset × variant (selection rules of METHODS §5) from "
                "every finished lpm_checkpoint / lpm_finetuned run; DuckDB view `lpm_results` (dataset, variant, "
                "split, n_seeds, rmse_mean, rmse_sd); the paper's reference table beside it in the report.",
)
def lpm_results(context: dg.AssetExecutionContext, config: LpmResultsConfig, storage: StorageResource,
                catalog: CatalogResource) -> dg.MaterializeResult:
    seeds = lpr.SEEDS if config.paper else list(config.seeds)
    rows = lpr.seed_rows(storage.path("lpm"), seeds)
    if rows.empty:
        raise dg.Failure(description="no finished LPM run found under $CPB_HOME/lpm/{runs,finetune}")
    res = lpr.summarize(rows)
    write_parquet(res, storage.table_path("lpm_results"))
    write_parquet(rows, storage.table_path("lpm_results_seeds"))
    report = lpr.report_markdown(res)
    path = storage.path("reports", "lpm", "lpm_results.md")
    with atomic_path(path) as tmp:
        tmp.write_text("# LPM molecule-holdout test RMSE: ours (demo or real) ± SD (paper, real data)\n\n"
                       + report + "\n")
    catalog.refresh()
    return dg.MaterializeResult(metadata={
        "rows": len(res), "runs": int(rows.groupby(["dataset", "variant", "seed"]).ngroups),
        "variants": dg.MetadataValue.json(sorted(res["variant"].unique().tolist())),
        "report": dg.MetadataValue.md(report), "path": dg.MetadataValue.path(str(path)),
    })


LPM_ASSETS += [lpm_checkpoint, lpm_finetuned, compound_embeddings, lpm_results]
