"""The one source contract (cpb_assets.sources.registry.SourceSpec), checked for every dataset partition."""
from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
from pathlib import Path

import pytest

from cpb_assets.datasets import DATASET_INFO, DATASETS
from cpb_assets.errors import SourceFormatError
from cpb_assets.sources.base import RemoteFile
from cpb_assets.sources.landing import MissingSourceFiles, materialize_source, missing_files_message
from cpb_assets.sources.registry import SOURCES, SourceSpec, source_spec

REPO = Path(__file__).resolve().parents[2]
# METHODS §3: the DE layer restricts Tahoe, sci-Plex, OP3 and L1000 to 24 h; the others keep every time
DE_24H = {"tahoe100m", "sciplex", "op3", "l1000_phase1", "l1000_phase2"}


def test_one_spec_per_partition():
    assert list(SOURCES) == DATASETS
    assert all(s.dataset == k for k, s in SOURCES.items())
    with pytest.raises(dataclasses.FrozenInstanceError):
        SOURCES["op3"].plate_units = True  # type: ignore[misc]
    with pytest.raises(KeyError, match="l1000_phase1"):
        source_spec("l1000_phase3")


@pytest.mark.parametrize("dataset", DATASETS)
def test_spec_keeps_the_contract(dataset, tmp_path):
    spec: SourceSpec = SOURCES[dataset]
    mod = spec.module()
    # the reader: compound_records(folder, dataset), harmonize(folder, dataset, registry[, plate_runner])
    assert list(inspect.signature(mod.compound_records).parameters)[:2] == ["folder", "dataset"]
    params = inspect.signature(mod.harmonize).parameters
    assert list(params)[:3] == ["folder", "dataset", "registry"]
    assert ("plate_runner" in params) == spec.plate_units
    assert isinstance(mod.REMOTE_FILES, dict) and all(isinstance(r, RemoteFile) for r in spec.remote_files)
    # the demo writer lives in the demo package, not in the reader
    assert spec.demo_writer.startswith("cpb_assets.demo.")
    assert callable(importlib.import_module(spec.demo_writer).write_synthetic)
    assert not hasattr(mod, "write_synthetic")
    # DE time restriction per METHODS §3
    assert spec.de_times_h == ((24.0,) if dataset in DE_24H else None)
    # files: an empty landing folder lacks all of them, the readers say so with SourceFormatError
    assert spec.files and spec.missing_files(tmp_path) == list(spec.files)
    with pytest.raises(SourceFormatError):
        spec.compound_records(tmp_path)
    with pytest.raises(SourceFormatError):
        spec.harmonize(tmp_path, None)
    assert DATASET_INFO[dataset].assay and not hasattr(mod, "ASSAY")


@pytest.mark.parametrize("dataset", ["l1000_phase2", "vcpi_0001"])
def test_missing_files_say_what_to_download_and_where(dataset, tmp_path):
    spec = SOURCES[dataset]
    with pytest.raises(MissingSourceFiles) as err:
        materialize_source(spec, tmp_path / "dest", profile="real", seed=None, landing=tmp_path / "landing",
                           download=False)
    msg = str(err.value)
    assert str(tmp_path / "landing") in msg and spec.files[0] in msg
    assert msg == missing_files_message(spec, tmp_path / "landing", list(spec.files))
    for r in spec.remote_files:  # public sources: every file with its URL
        assert r.filename in msg and r.url in msg
    if not spec.remote_files:  # gated sources: the access step
        assert spec.access and spec.access in msg


def test_resources_never_import_cpb_assets():
    for path in sorted((REPO / "cpb_resources").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] == "cpb_assets" for n in names), f"{path.name} imports {names}"


def test_no_getattr_probing_or_dataset_dispatch_in_the_stage_assets():
    for rel in ("cpb_assets/sources/assets.py", "cpb_assets/harmonize/assets.py", "cpb_assets/sources/landing.py"):
        text = (REPO / rel).read_text()
        assert "getattr(" not in text and "dataset ==" not in text and "ds ==" not in text, rel
