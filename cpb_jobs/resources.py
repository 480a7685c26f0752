"""Resource set of the platform, configured from the environment."""
from __future__ import annotations

import os
from pathlib import Path

from cpb_resources.catalog import CatalogResource
from cpb_resources.compound_registry import CompoundRegistryResource
from cpb_resources.compute import ComputeResource
from cpb_resources.sources import SourceCatalogResource
from cpb_resources.storage import StorageResource


def build_resources() -> dict:
    """Resources from the environment: ``CPB_HOME``, ``CPB_PROFILE`` (demo | real), ``CPB_COMPUTE``
    (local | slurm) and the ``CPB_SLURM_*`` settings of ``docs/compute.md``, ``CPB_PUBCHEM_ONLINE=1``
    (ask PubChem for compounds the offline reference lacks), ``CPB_COMPOUND_MANUAL`` (a TSV of
    manual fallbacks: dataset, key, pubchem_cid)."""
    home = os.environ.get("CPB_HOME", "")
    profile = os.environ.get("CPB_PROFILE", "demo")
    return {
        "storage": StorageResource(home=home),
        "catalog": CatalogResource(home=home),
        "source_catalog": SourceCatalogResource(profile=profile),
        "compound_resolver": CompoundRegistryResource(
            demo_synonyms=(profile == "demo"),
            pubchem_online=os.environ.get("CPB_PUBCHEM_ONLINE", "0") == "1",
            pubchem_cache=str(Path(home or Path.cwd() / ".cpb") / "pubchem_cache.duckdb"),
            manual_table=os.environ.get("CPB_COMPOUND_MANUAL", ""),
        ),
        "compute": ComputeResource.from_env(),
    }
