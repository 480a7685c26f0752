"""One unreadable source file fails its own partition only: the compound registry of all datasets still
materializes, names the broken dataset and file, and keeps every other dataset's compounds."""
import shutil
import warnings

import dagster as dg
import pandas as pd

from tests.conftest import REPO

warnings.filterwarnings("ignore")
DATA = REPO / "tests" / "data"


def test_a_truncated_compound_file_skips_that_dataset_not_the_registry(cpb_home):
    from cpb_assets.harmonize.assets import compound_registry
    from cpb_jobs.definitions import defs

    for ds in ("vcpi_0001", "cigs_tcm"):
        shutil.copytree(DATA / ds, cpb_home / "sources" / ds)
    chem = cpb_home / "sources" / "vcpi_0001" / "vcpi-0001_chemistry.parquet"
    chem.write_bytes(chem.read_bytes()[: chem.stat().st_size // 2])  # a truncated download
    result = dg.materialize([compound_registry], resources=defs.resources)
    assert result.success
    (mat,) = result.asset_materializations_for_node("compound_registry")
    skipped = mat.metadata["skipped_datasets"].value
    assert chem.name in skipped["vcpi_0001"]  # the broken dataset, with its file named
    assert "cigs_tcm" not in skipped
    registry = pd.read_parquet(cpb_home / "tables" / "compounds" / "part.parquet")
    assert set(registry["dataset"]) == {"cigs_tcm"} and len(registry) > 0
