"""sci-Plex 3 route: GEO-style files round trip, clean-up rules, planted truth, bad inputs."""
from __future__ import annotations

import gzip
import io

import numpy as np
import pandas as pd
import pytest

from cpb_assets.errors import SourceFormatError
from cpb_assets.harmonize.schema import validate_harmonized
from cpb_assets.demo import sciplex as demo_sciplex
from cpb_assets.sources import sciplex
from cpb_assets.demo.world import DESIGNS

REG = pd.DataFrame(columns=["source_id", "pubchem_cid", "cid_method"])


def _pdata(folder):
    path = next(folder.glob("*pData*"))
    return pd.read_csv(io.StringIO(gzip.decompress(path.read_bytes()).decode()), sep=" ", na_values=["NA"])


def test_round_trip_is_valid_and_has_the_designed_samples(sciplex_run):
    folder, files, h = sciplex_run
    d = DESIGNS["sciplex"]
    expected = len(d.cell_types) * d.replicates * (len(d.compounds) * len(d.doses_uM)
                                                  + demo_sciplex.CONTROL_WELLS_PER_PLATE)
    obs = h.adata.obs
    assert validate_harmonized(h.adata) == []
    # the 24 h design plus the A549 72 h plate (2 vehicle wells + 5 compounds): 72 h is kept
    day1 = obs["pert_time_h"] == 24.0
    assert int(day1.sum()) == expected == 504
    assert h.adata.n_obs == 504 + 7 and set(obs["pert_time_h"]) == {24.0, 72.0}
    assert set(obs.loc[~day1, "cell_type"]) == {"CVCL_0023"}
    assert all("SYNTHETIC" in f.name for f in files)
    assert set(obs["cell_type"]) == {"CVCL_0023", "CVCL_0004", "CVCL_0031"}  # A549, K562, MCF7
    assert sorted(obs["pert_dose_uM"].unique()) == [0.0, 0.01, 0.1, 1.0, 10.0]  # nM / 1000
    # 'Vehicle' and 'DMSO' wells both became DMSO controls
    ctrl = obs[obs["is_control"]]
    assert set(ctrl["perturbagen"]) == {"DMSO"} and len(ctrl) == 6 * demo_sciplex.CONTROL_WELLS_PER_PLATE + 2
    assert obs.loc[~obs["is_control"], "pubchem_cid"].notna().all()
    assert not h.adata.var_names.str.contains(r"\.|MUS").any() and h.adata.n_vars == 1987


def test_every_dropped_cell_and_gene_is_quarantined_with_its_reason(sciplex_run):
    folder, _, h = sciplex_run
    pdata = _pdata(folder)
    q = h.quarantine.to_frame()
    by = q.groupby(["level", "reason"])["n"].sum()
    # the 72 h A549 plate is kept: no time point is quarantined
    assert not q["reason"].str.contains("time point").any()
    assert by[("cell", "missing grouping field")] >= pdata["well_oligo"].isna().sum()
    assert by[("gene", "not a human Ensembl gene ID")] == demo_sciplex.N_MOUSE_GENES
    assert by[("gene", "PAR_Y copy of a pseudo-autosomal gene")] == 1
    assert h.adata.obs["psbulk_cells"].sum() + by["cell"].sum() == len(pdata)


def test_planted_truth_is_visible(world, sciplex_run, sc):
    _, _, h = sciplex_run
    comp = 25  # potency 2 (strong), three program bits (compound 20 carries none: a weaker, 3 % response)
    assert world.compounds["potency"].iloc[comp] == 2.0
    r = sc.log_ratio_vs_truth(world, h.adata, "CVCL_0031", comp, 10.0, world.compounds["name"].iloc[comp], "sciplex")
    # ~40 nuclei of ~1,400 UMIs per well: weaker than Tahoe but far above chance
    assert r > 0.4


def _tiny(folder, *, pdata_drop=None, count="3", gene_dup=False):
    """A 3-gene, 2-cell sci-Plex folder written by hand."""
    def put(name, text):
        (folder / name).write_bytes(gzip.compress(text.encode()))
    ids = ["ENSG00000000003.14", "ENSG00000000005.5", "ENSG00000000003.14" if gene_dup else "ENSG00000000419.12"]
    put("x_screen_gene.annotations.txt.gz", "".join(f"{i}\tG{k}\n" for k, i in enumerate(ids)))
    put("x_screen_cell.annotations.txt.gz", "c1\tChem3\nc2\tChem3\n")
    put("x_screen_UMI.count.matrix.gz", f"1\t1\t5\n2\t1\t{count}\n3\t2\t1\n")
    cols = ["cell", "plate_oligo", "well_oligo", "cell_type", "time_point", "dose", "vehicle", "product_name",
            "catalog_number"]
    rows = ['"c1" "plate41" "plate2_A1" "A549" 24 0 TRUE "Vehicle" "S0000"',
            '"c2" "plate41" "plate2_A2" "A549" 24 1000 FALSE "synthocin-20" "SYN-10020"']
    if pdata_drop:
        k = cols.index(pdata_drop)
        cols.pop(k)
        rows = [" ".join(r.split(" ")[:k] + r.split(" ")[k + 1:]) for r in rows]
    put("x_pData.txt.gz", " ".join(f'"{c}"' for c in cols) + "\n" + "\n".join(rows) + "\n")


def _assert_rejected(folder, file_part, field):
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(SourceFormatError) as exc:
        sciplex.harmonize(folder, "sciplex", REG)
    assert exc.value.field == field and file_part in exc.value.file
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written


@pytest.mark.parametrize("column", ["well_oligo", "plate_oligo", "cell_type", "product_name"])
def test_cell_table_without_a_grouping_column_is_rejected(tmp_path, column):
    _tiny(tmp_path, pdata_drop=column)
    _assert_rejected(tmp_path, "pData", column)


@pytest.mark.parametrize("count", ["2.5", "-4"])
def test_fractional_or_negative_counts_are_rejected(tmp_path, count):
    _tiny(tmp_path, count=count)
    _assert_rejected(tmp_path, "UMI.count.matrix", "count")


def test_duplicate_gene_ids_are_rejected(tmp_path):
    _tiny(tmp_path, gene_dup=True)
    _assert_rejected(tmp_path, "gene.annotations", "id")


def test_compound_records_come_from_the_hash_table(sciplex_run, world):
    folder, _, _ = sciplex_run
    rec = sciplex.compound_records(folder, "sciplex")
    d = DESIGNS["sciplex"]
    assert sorted(rec["source_id"]) == sorted(world.compounds["catalog_id"].iloc[list(d.compounds)])
    assert rec["smiles"].notna().all() and "S0000" not in set(rec["source_id"])


def test_unknown_cell_lines_are_quarantined_in_cells(tmp_path):
    """A hand-written folder: 2 A549 nuclei that pass QC, 3 nuclei of lines outside the context table."""
    def put(name, text):
        (tmp_path / name).write_bytes(gzip.compress(text.encode()))
    n_genes, cells = 300, ["c1", "c2", "c3", "c4", "c5"]
    put("x_screen_gene.annotations.txt.gz", "".join(f"ENSG{90000000000 + k:011d}.1\tG{k}\n" for k in range(n_genes)))
    put("x_screen_cell.annotations.txt.gz", "".join(f"{c}\tChem3\n" for c in cells))
    # 5 UMIs on every gene of every nucleus: 300 genes, 1,500 UMIs, no MT- genes, no MALAT1
    put("x_screen_UMI.count.matrix.gz", "".join(f"{g + 1}\t{c + 1}\t5\n" for c in range(5) for g in range(n_genes)))
    cols = ["cell", "plate_oligo", "well_oligo", "cell_type", "time_point", "dose", "vehicle", "product_name",
            "catalog_number"]
    rows = ['"c1" "plate41" "plate2_A1" "A549" 24 0 TRUE "Vehicle" "S0000"',
            '"c2" "plate41" "plate2_A2" "A549" 24 1000 FALSE "synthocin-20" "SYN-10020"',
            '"c3" "plate41" "plate2_A1" "HeLa-S3" 24 0 TRUE "Vehicle" "S0000"',
            '"c4" "plate41" "plate2_A2" "HeLa-S3" 24 1000 FALSE "synthocin-20" "SYN-10020"',
            '"c5" "plate41" "plate2_A2" "CVCL_9999" 24 1000 FALSE "synthocin-20" "SYN-10020"']
    put("x_pData.txt.gz", " ".join(f'"{c}"' for c in cols) + "\n" + "\n".join(rows) + "\n")
    h = sciplex.harmonize(tmp_path, "sciplex", REG)
    # a well-formed Cellosaurus accession is accepted as it stands; an unknown name is quarantined
    assert h.adata.n_obs == 3 and set(h.adata.obs["cell_type"]) == {"CVCL_0023", "CVCL_9999"}
    q = h.quarantine.to_frame()
    unknown = q["reason"].str.startswith("unknown cell line")
    assert q[unknown].set_index("record_id")["n"].to_dict() == {"HeLa-S3": 2}
    assert q.loc[~unknown, "n"].sum() == 0  # the A549 nuclei pass QC
    assert h.adata.uns["synthetic"] is False  # hand-written, not named SYNTHETIC


def test_round_trip_is_labelled_synthetic_and_uses_dataset_assay(sciplex_run):
    from cpb_assets.datasets import DATASET_INFO
    from cpb_assets.harmonize.schema import OBS_COLUMNS, OPTIONAL_OBS

    a = sciplex_run[2].adata
    assert a.uns["synthetic"] is True
    assert set(a.obs["assay"]) == {DATASET_INFO["sciplex"].assay}
    assert set(a.obs.columns) - set(OBS_COLUMNS) <= set(OPTIONAL_OBS)
