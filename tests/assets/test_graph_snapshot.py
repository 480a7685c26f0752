"""Snapshot of the asset graph: keys, partitions, dependencies and checks.

When the graph changes on purpose, regenerate the snapshot with
``CPB_UPDATE_SNAPSHOT=1 pytest tests/assets/test_graph_snapshot.py`` and review the diff.
"""
import json
import os
from pathlib import Path

SNAPSHOT = Path(__file__).with_name("asset_graph.snapshot.json")


def graph_summary() -> dict:
    from cpb_jobs.definitions import defs

    graph = defs.resolve_asset_graph()
    out = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        pd_ = node.partitions_def
        out[key.to_user_string()] = {
            "partitions": None if pd_ is None else sorted(pd_.get_partition_keys()),
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "checks": sorted(c.name for c in node.check_keys),
            "observable_source": not node.is_materializable,
        }
    return out


def test_asset_graph_matches_snapshot():
    current = graph_summary()
    if os.environ.get("CPB_UPDATE_SNAPSHOT") == "1":
        SNAPSHOT.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
    assert current == json.loads(SNAPSHOT.read_text())


def test_dataset_partitions_are_the_13_of_methods():
    from cpb_assets.datasets import DATASETS

    assert DATASETS == ["l1000_phase1", "l1000_phase2", "tahoe100m", "sciplex", "op3", "novartis_drugseq",
                        "vcpi_0001", "vcpi_0002", "gdpx2", "cigs_mce", "cigs_tcm", "dilimap_train",
                        "dilimap_train_val"]


def test_code_version_covers_the_r_script(tmp_path):
    """de_table's code version hashes r_scripts/limma_de.R: a changed R fit makes the DE stale."""
    from cpb_assets.effects.assets import DE_CODE_MODULES, DE_CODE_SCRIPTS, de_table
    from cpb_assets.versioning import code_version

    script = tmp_path / "fit.R"
    script.write_text("fit <- lmFit(y, design)\n")
    before = code_version("cpb_assets.effects.de", scripts=(str(script),))
    script.write_text("fit <- lmFit(y, design, method = 'robust')\n")
    assert code_version("cpb_assets.effects.de", scripts=(str(script),)) != before
    version = de_table.code_versions_by_key[de_table.key]
    assert DE_CODE_SCRIPTS == ("r_scripts/limma_de.R",)
    assert version == code_version(*DE_CODE_MODULES, scripts=DE_CODE_SCRIPTS)
    assert version != code_version(*DE_CODE_MODULES)


def test_definitions_load_without_torch():
    """The code server, every demo worker and every `cpb` command load the definitions: torch (2 s of import)
    is for the training and prediction steps only (cpb_assets/lpm/config.py holds the torch-free part)."""
    import subprocess
    import sys

    code = "import sys, cpb_jobs.definitions; print(sorted(m for m in ('torch', 'cpb_assets.lpm.train') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
