"""MLflow tracking of LPM training runs, in a real SQLite store with file artifacts."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from cpb_resources.mlflow import MlflowResource

sys.path.insert(0, str(Path(__file__).parent))
from lpm_train_data import tiny_shards  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _params(root, out, spec, **kw):
    cfg = {"form": "multi", "epochs": 2, "batch_size": 8, "seed": 13}
    return {"config": cfg, "shard_root": str(root), "form": "multi", "datasets": None, "select_datasets": None,
            "fingerprints": None, "split_hash": "feedc0ffee", "out_dir": str(out),
            "mlflow": {**spec, "run_name": "all-seed13", "tags": {"variant": "All", "seed": "13"}}, **kw}


def test_training_run_is_an_mlflow_run_with_params_metrics_and_artifacts(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from cpb_assets.lpm.workloads import train_one

    monkeypatch.setenv("CPB_HOME", str(tmp_path / "home"))
    res = MlflowResource()
    assert res.uri == f"sqlite:///{tmp_path / 'home' / 'mlflow' / 'mlflow.db'}"
    spec = res.worker_spec("cpb-lpm")
    exp = MlflowClient(res.uri).get_experiment(spec["experiment_id"])
    assert exp.artifact_location == (tmp_path / "home" / "mlflow" / "artifacts" / "cpb-lpm").as_uri()
    assert res.experiment("cpb-lpm") == spec["experiment_id"]  # found again, not created twice

    root = tiny_shards(tmp_path / "data")
    out = tmp_path / "run"
    # a job killed after epoch 1, then run again: one MLflow run, continued
    first = train_one(_params(root, out, spec, stop_after=1))
    assert first["epochs_done"] == 1 and not first["finished"]
    result = train_one(_params(root, out, spec))
    assert result["mlflow_run_id"] == first["mlflow_run_id"] and result["resumed_from"] == 1

    client = MlflowClient(res.uri)
    run = client.get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.info.experiment_id == spec["experiment_id"]
    p = run.data.params
    assert p["variant"] == "All" and p["seed"] == "13" and p["split_hash"] == "feedc0ffee"
    assert p["lr"] == "0.002" and p["weight_decay"] == "0.01" and p["gamma"] == "0.97" and p["batch_size"] == "8"
    assert int(p["n_readouts"]) == 12 and int(p["n_perturbations"]) == 9
    curve = client.get_metric_history(run.info.run_id, "val_rmse")
    assert [m.step for m in curve] == [1, 2]
    hist = json.loads((out / "history.json").read_text())
    assert [m.value for m in curve] == pytest.approx([h["val_rmse"] for h in hist])
    assert client.get_metric_history(run.info.run_id, "val_rmse/l1000_phase1/CVCL_0023")
    assert client.get_metric_history(run.info.run_id, "train_rmse/l1000_phase2")
    chosen = json.loads(run.data.tags["chosen_epochs"])
    assert set(chosen) == {"l1000_phase1", "l1000_phase2"}
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"vocab.json", "history.json", "selection.json", "weights"} <= arts
    weights = {a.path for a in client.list_artifacts(run.info.run_id, "weights")}
    assert weights == {f"weights/epoch-{e:03d}.pt" for e in set(chosen.values())}
    local = Path(client.download_artifacts(run.info.run_id, sorted(weights)[0], str(tmp_path / "dl")))
    ck = torch.load(local, weights_only=True)
    assert ck["split_hash"] == "feedc0ffee" and ck["vocab"]["form"] == "multi"

    meta = res.run_metadata(spec["experiment_id"], run.info.run_id)
    assert meta["mlflow_run"].url == f"http://127.0.0.1:5000/#/experiments/{spec['experiment_id']}/runs/{run.info.run_id}"


def test_tracking_uri_from_config_and_environment(tmp_path):
    other = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    res = MlflowResource.from_env({"CPB_MLFLOW_URI": other, "CPB_MLFLOW_ARTIFACTS": str(tmp_path / "arts")})
    assert res.uri == other
    assert res.artifact_location("x") == (tmp_path / "arts" / "x").as_uri()
    assert MlflowResource(tracking_uri="http://127.0.0.1:5999").artifact_location("x") is None


def _experiment_in_a_fresh_process(uri_and_root):
    uri, root = uri_and_root
    return MlflowResource(tracking_uri=uri, artifact_root=root).experiment("op3_downstream")


def test_steps_creating_a_fresh_store_at_once_all_get_the_one_experiment(tmp_path):
    """Three processes ask a fresh SQLite store for one experiment at the same moment (partitions of a backfill
    on a new home): without the store lock MLflow's schema migrations collide ("table … already exists")."""
    import multiprocessing as mp

    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    with mp.get_context("spawn").Pool(3) as pool:
        ids = pool.map(_experiment_in_a_fresh_process, [(uri, str(tmp_path / "artifacts"))] * 3)
    assert len(set(ids)) == 1
    from mlflow import MlflowClient

    names = sorted(e.name for e in MlflowClient(tracking_uri=uri).search_experiments())
    assert names == ["Default", "op3_downstream"]


def test_model_assets_materialize_through_compute_and_answer_sql(world, tmp_path, monkeypatch):
    """lpm_checkpoint → lpm_finetuned → compound_embeddings → lpm_results, the path `make demo` takes
    (local compute subprocess, real MLflow store, DuckDB views), on SYNTHETIC planted-truth shards."""
    import dagster as dg
    import duckdb
    from mlflow import MlflowClient

    from cpb_assets.lpm.assets import compound_embeddings, lpm_checkpoint, lpm_finetuned, lpm_results
    from cpb_resources.catalog import CatalogResource
    from cpb_resources.compute import ComputeResource
    from cpb_resources.storage import StorageResource
    from lpm_train_data import build_lpm_home

    home = tmp_path / "home"
    monkeypatch.setenv("CPB_HOME", str(home))
    build_lpm_home(world, home)  # writes $CPB_HOME/lpm/{splits,shards,fingerprints}
    resources = {"storage": StorageResource(), "catalog": CatalogResource(), "compute": ComputeResource(),
                 "mlflow": MlflowResource()}
    train_cfg = {"epochs_multi": 2, "batch_multi": 16, "seeds": ["13"]}
    assets = [lpm_checkpoint, lpm_finetuned, compound_embeddings, lpm_results]

    def mat(asset, key, config):
        pk = dg.MultiPartitionKey(key) if isinstance(key, dict) else key
        res = dg.materialize(assets, selection=[asset], partition_key=pk, resources=resources,
                             run_config={"ops": {asset.key.path[-1]: {"config": config}}})
        assert res.success
        return res.asset_materializations_for_node(asset.key.path[-1])[0].metadata

    meta = mat(lpm_checkpoint, {"variant": "all", "seed": "13"}, train_cfg)
    run_id = meta["mlflow_run_id"].value
    assert meta["epochs"].value == 2 and "/runs/" + run_id in meta["mlflow_run"].url
    run = MlflowClient(MlflowResource().uri).get_run(run_id)
    assert run.data.params["variant"] == "All" and run.data.params["seed"] == "13"
    meta = mat(lpm_finetuned, {"dataset": "l1000_phase2", "variant": "ft_frozen_mol"}, train_cfg)
    assert meta["source_variant"].value == "all" and meta["source_seed"].value == 13
    src = torch.load(home / "lpm" / "runs" / "all" / "seed=13" / f"epoch-{meta['source_epoch'].value:03d}.pt",
                     weights_only=True)["model"]["perturbation_emb.bag.weight"]
    ft = sorted((home / "lpm" / "finetune" / "l1000_phase2" / "ft_frozen_mol" / "seed=13").glob("epoch-*.pt"))
    assert torch.equal(torch.load(ft[-1], weights_only=True)["model"]["perturbation_emb.bag.weight"], src)  # frozen
    meta = mat(compound_embeddings, "all", {"seed": "13", "epoch": 20})
    assert meta["epoch"].value == 2 and meta["dim"].value == 128
    mat(lpm_results, None, {"seeds": ["13"]})
    con = duckdb.connect(str(home / "catalog.duckdb"), read_only=True)
    got = con.execute("select dataset, variant, split, n_seeds from lpm_results order by 1, 2").fetchall()
    assert ("l1000_phase2", "All", "molecule", 1) in got and ("l1000_phase2", "FT frozen mol", "molecule", 1) in got
    assert con.execute("select count(*) from compound_embeddings where variant = 'all'").fetchone()[0] == 50
    con.close()
