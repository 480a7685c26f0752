"""Shared fixtures: an isolated $CPB_HOME per test session, the demo world, real data paths."""
from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL = REPO / "data" / "real"
REAL_GCT = REAL / "l1000_ljp005" / "test_l1000.gct"
REAL_GCTX = REAL / "l1000_ljp005" / "test_l1000_highprecision.gctx"

warnings.filterwarnings("ignore", category=Warning, module="dagster")


@pytest.fixture(scope="session", autouse=True)
def _r_started_cleanly():
    """Start R once, before any test imports rpy2, so that R's LD_LIBRARY_PATH change is undone
    for the whole session (subprocesses of later tests must load the venv's libpython)."""
    from cpb_resources.limma import r_objects

    r_objects()


@pytest.fixture(scope="session", autouse=True)
def _harmonized_scratch(tmp_path_factory):
    """Readers that write their h5ad themselves (L1000) write it under pytest's temporary folder
    when a test calls them outside the asset (which passes its own folder)."""
    from cpb_assets.harmonize.assemble import harmonized_scratch

    with harmonized_scratch(tmp_path_factory.mktemp("harmonized-scratch")) as folder:
        yield folder


def make_home(path: Path) -> Path:
    """A fresh CPB_HOME with its Dagster instance config."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "dagster").mkdir(exist_ok=True)
    shutil.copy(REPO / "dagster.yaml", path / "dagster" / "dagster.yaml")
    return path


@pytest.fixture
def cpb_home(tmp_path, monkeypatch) -> Path:
    home = make_home(tmp_path / "cpb")
    monkeypatch.setenv("CPB_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    return home


@pytest.fixture(scope="session")
def world():
    from cpb_assets.demo.world import build_world
    return build_world()


@contextlib.contextmanager
def saved_home_variables():
    """Restore $CPB_HOME and $DAGSTER_HOME (``make`` exports both) to their values before the block."""
    old = {k: os.environ.get(k) for k in ("CPB_HOME", "DAGSTER_HOME")}
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def home_environment(home: Path):
    """$CPB_HOME and $DAGSTER_HOME of `home` for the block; for session/module fixtures, where
    ``monkeypatch`` is not available."""
    with saved_home_variables():
        os.environ["CPB_HOME"], os.environ["DAGSTER_HOME"] = str(home), str(Path(home) / "dagster")
        yield Path(home)


@pytest.fixture(autouse=True)
def _home_variables_restored():
    """In-process CLI calls (`main([... "--home", X])`) set $CPB_HOME / $DAGSTER_HOME for X; no test
    leaves them to the next."""
    with saved_home_variables():
        yield


def demo_home(tmp_path_factory, name: str, datasets: list[str], until: str) -> Path:
    home = make_home(tmp_path_factory.mktemp(name))
    with home_environment(home):
        from cpb_jobs.demo import main
        assert main(["--home", str(home), "--datasets", *datasets, "--until", until]) == 0
    return home


@pytest.fixture(scope="session")
def l1000_home(tmp_path_factory) -> Path:
    """A CPB_HOME where the demo's two L1000 partitions went through Dagster
    (raw source, compound registry, harmonized AnnData, DE tables, with checks)."""
    # the demo's steps up to the LPM training tables and the agreement stage (the pair, replicates,
    # report); LPM training and OP3 have their own (smaller) asset tests, and `make demo` runs them all
    return demo_home(tmp_path_factory, "l1000_home", ["l1000_phase1", "l1000_phase2"], until="agreement")


@pytest.fixture(scope="session")
def count_home(tmp_path_factory) -> Path:
    """The same for a count-route dataset (VCPI-0001: edgeR/voom route, two cell lines)."""
    return demo_home(tmp_path_factory, "count_home", ["vcpi_0001"], until="de")


@pytest.fixture(scope="session")
def ingest_real_layouts():
    """``ingest(home, datasets, catalog_for)``: the production path of ``cpb ingest`` for several real-layout
    fixtures — raw_source per partition, the compound registry once, harmonized_adata (with its checks) per
    partition — in the Dagster instance of `home`. ``catalog_for(partition)`` gives the partition's
    SourceCatalogResource. Returns ``{dataset: (exit status, failures + cpb ingest summary)}``."""

    def ingest(home: Path, datasets, catalog_for) -> dict:
        import dagster as dg

        from cpb_jobs.cli import summary_lines
        from cpb_jobs.definitions import ALL_ASSETS, ALL_CHECKS
        from cpb_jobs.demo import prepare_environment
        from cpb_jobs.resources import build_resources
        from cpb_resources.compound_registry import CompoundRegistryResource

        by_key = {a.key.to_user_string(): a for a in ALL_ASSETS}
        logs = {}
        with home_environment(home):
            prepare_environment(str(home))

            def run(step, partition=None):
                resources = {**build_resources(), "source_catalog": catalog_for(partition),
                             "compound_resolver": CompoundRegistryResource(demo_synonyms=False)}
                sel = dg.AssetSelection.assets(by_key[step]) | dg.AssetSelection.checks_for_assets(by_key[step])
                with dg.DagsterInstance.get() as instance:
                    return dg.materialize([*ALL_ASSETS, *ALL_CHECKS], selection=sel, instance=instance,
                                          partition_key=partition, resources=resources, raise_on_error=False)

            ok = {ds: run("raw_source", ds).success for ds in datasets}
            assert run("compound_registry").success
            for ds in datasets:
                r = run("harmonized_adata", ds)
                failures = [ev.step_failure_data.error.message for ev in r.all_events if ev.is_step_failure]
                logs[ds] = (0 if ok[ds] and r.success else 1,
                            "\n".join(failures + (summary_lines(home, ds) if r.success else [])))
        return logs

    return ingest
