"""Resource set of the platform, configured from the environment."""
from __future__ import annotations

import os

from cpb_resources.catalog import CatalogResource
from cpb_resources.compound_registry import CompoundRegistryResource
from cpb_resources.compute import ComputeResource
from cpb_resources.mlflow import MlflowResource
from cpb_resources.sources import SourceCatalogResource
from cpb_resources.storage import StorageResource


def build_resources() -> dict:
    """Resources from the environment: ``CPB_HOME``, ``CPB_PROFILE`` (demo | real), ``CPB_COMPUTE``
    (local | slurm) and the ``CPB_SLURM_*`` settings of ``docs/compute.md``, ``CPB_PUBCHEM_ONLINE=1``
    (ask PubChem for compounds the offline reference lacks), ``CPB_COMPOUND_MANUAL`` (a TSV of
    manual fallbacks: dataset, key, pubchem_cid).

    Paths stay unset here: storage, catalog and the PubChem cache resolve ``$CPB_HOME`` when they are
    used, so a process that changes ``CPB_HOME`` after importing the Definitions (a test, a worker)
    never writes into another home."""
    profile = os.environ.get("CPB_PROFILE", "demo")
    return {
        "storage": StorageResource(),
        "catalog": CatalogResource(),
        "source_catalog": SourceCatalogResource(profile=profile),
        "compound_resolver": CompoundRegistryResource(
            demo_synonyms=(profile == "demo"),
            pubchem_online=os.environ.get("CPB_PUBCHEM_ONLINE", "0") == "1",
            manual_table=os.environ.get("CPB_COMPOUND_MANUAL", ""),
        ),
        "compute": ComputeResource.from_env(),
        # LPM training runs: sqlite:///$CPB_HOME/mlflow/mlflow.db unless CPB_MLFLOW_URI names another store
        "mlflow": MlflowResource.from_env(),
    }
