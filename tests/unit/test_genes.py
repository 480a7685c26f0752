"""The offline gene map (org.Hs.eg.db) and the Excel symbol repair.

Expected values were checked by hand against org.Hs.eg.db 3.16 (NCBI Gene
2022-Sep-12, Ensembl 2022-Jun-28) with sqlite3.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from cpb_assets.harmonize import genes as G
from cpb_assets.sources.gctx import read_gct

ROOT = Path(__file__).resolve().parents[2]
GCT = ROOT / "data" / "real" / "l1000_ljp005" / "test_l1000.gct"



def test_entrez_known_mappings_in_input_order():
    out = G.entrez_to_ensembl([7157, "5720", 4512.0, " 989 "])
    assert list(out.columns) == G.ENTREZ_COLUMNS
    assert out["input"].tolist() == [7157, "5720", 4512.0, " 989 "]
    assert out["entrez_id"].tolist() == ["7157", "5720", "4512", "989"]
    assert out["symbol"].tolist() == ["TP53", "PSME1", "MT-CO1", "SEPTIN7"]
    assert out["ensembl_id"].tolist() == [
        "ENSG00000141510", "ENSG00000092010", "ENSG00000198804", "ENSG00000122545"]
    assert out["method"].tolist() == ["entrez"] * 4


def test_entrez_with_two_ensembl_ids_takes_the_lowest_and_records_the_other():
    # PSME1 has ENSG00000092010 (primary assembly) and ENSG00000284916 (alt. haplotype)
    row = G.entrez_to_ensembl([5720]).iloc[0]
    assert row["ensembl_id"] == "ENSG00000092010"
    assert row["ensembl_alternatives"] == "ENSG00000284916"


def test_entrez_unmapped_rows_are_kept_and_flagged():
    out = G.entrez_to_ensembl(["999999999", "not-an-id", None, 1.5, 7157])
    assert len(out) == 5
    assert out["method"].tolist() == ["unmapped"] * 4 + ["entrez"]
    assert out["ensembl_id"].iloc[:4].isna().all()
    assert out["entrez_id"].tolist()[:4] == ["999999999", None, None, None]


@pytest.mark.parametrize("old, new, ensembl", [
    ("TMEM2", "CEMIP2", "ENSG00000135048"),
    ("MARCH1", "MARCHF1", "ENSG00000145416"),
    ("SEPT7", "SEPTIN7", "ENSG00000122545"),
    ("CD97", None, None),  # alias of ADGRE5 and of CD55: ambiguous, stays unmapped
])
def test_previous_symbols_resolve_through_the_alias_table(old, new, ensembl):
    row = G.symbols_to_ensembl([old]).iloc[0]
    assert row["symbol"] == new
    assert row["ensembl_id"] == ensembl
    assert row["method"] == ("previous_symbol" if new else "unmapped")


def test_official_symbols_beat_aliases_and_case_is_forgiven():
    out = G.symbols_to_ensembl(["PSME1", "psme1", "TP53", "HBD"])
    assert out["method"].tolist() == ["symbol"] * 4
    assert out["symbol"].tolist() == ["PSME1", "PSME1", "TP53", "HBD"]
    # HBD names two loci; only Entrez 3045 has an Ensembl gene
    assert out["ensembl_id"].tolist() == [
        "ENSG00000092010", "ENSG00000092010", "ENSG00000141510", "ENSG00000223609"]


def test_ambiguous_alias_stays_unmapped():
    # DEC1 is an alias of both BHLHE40 and DELEC1
    row = G.symbols_to_ensembl(["DEC1"]).iloc[0]
    assert row["method"] == "unmapped" and row["ensembl_id"] is None


@pytest.mark.parametrize("symbol, ensembl", [
    ("MT-CO1", "ENSG00000198804"), ("MT-CO2", "ENSG00000198712"), ("MT-CO3", "ENSG00000198938"),
    ("MT-ND1", "ENSG00000198888"), ("MT-ND2", "ENSG00000198763"), ("MT-ATP6", "ENSG00000198899"),
    ("MT-ND4", "ENSG00000198886"), ("MT-CYB", "ENSG00000198727"),
])
def test_mitochondrial_symbols_come_from_the_manual_table(symbol, ensembl):
    row = G.symbols_to_ensembl([symbol]).iloc[0]
    assert (row["symbol"], row["ensembl_id"], row["method"]) == (symbol, ensembl, "manual")


def test_manual_table_agrees_with_the_database_by_entrez():
    entrez = [e for e, _ in G.MITO_GENES.values()]
    out = G.entrez_to_ensembl(entrez)
    assert out["ensembl_id"].tolist() == [e for _, e in G.MITO_GENES.values()]
    assert out["symbol"].tolist() == list(G.MITO_GENES)  # HGNC MT- names, not NCBI's COX1 …


def test_dataset_manual_fallback_and_unknown_symbol():
    out = G.symbols_to_ensembl(["MYGENE1", "NOT_A_GENE", ""], manual={"MYGENE1": "ENSG00000999999"})
    assert out["method"].tolist() == ["manual", "unmapped", "unmapped"]
    assert out["ensembl_id"].tolist() == ["ENSG00000999999", None, None]


@pytest.mark.parametrize("raw, fixed", [
    ("1-Mar", "MARCHF1"), ("Mar-01", "MARCHF1"), ("1-MAR", "MARCHF1"), ("11-Mar", "MARCHF11"),
    ("7-Sep", "SEPTIN7"), ("Sep-07", "SEPTIN7"), ("SEPT7", "SEPTIN7"), ("MARCH5", "MARCHF5"),
    ("1-Dec", "DELEC1"), ("DEC1", "DELEC1"), ("13-Sep", "SEPTIN7P2"),
    ("2023-09-07 00:00:00", "SEPTIN7"), ("2023-03-02", "MARCHF2"),
    (dt.datetime(2023, 9, 7), "SEPTIN7"), (dt.date(2021, 3, 8), "MARCHF8"),
    (pd.Timestamp("2024-12-01"), "DELEC1"),
    # untouched
    ("TP53", "TP53"), ("MARCHF1", "MARCHF1"), ("SEPTIN7", "SEPTIN7"), ("SEPT7P2", "SEPT7P2"),
    ("12-Mar", "12-Mar"), ("2-Dec", "2-Dec"), ("1-Jan", "1-Jan"), ("MT-CO1", "MT-CO1"),
    (" TP53 ", " TP53 "), (None, None), (42, 42),
    (dt.datetime(2023, 5, 1), "2023-05-01 00:00:00"),
])
def test_repair_excel_symbol(raw, fixed):
    assert G.repair_excel_symbol(raw) == fixed


def test_repaired_symbols_map_to_ensembl():
    fixed = [G.repair_excel_symbol(s) for s in ["1-Mar", "7-Sep", dt.datetime(2022, 9, 2)]]
    out = G.symbols_to_ensembl(fixed)
    assert out["symbol"].tolist() == ["MARCHF1", "SEPTIN7", "SEPTIN2"]
    assert out["method"].tolist() == ["symbol"] * 3


def test_gene_table_is_deterministic_and_protein_coding():
    t = G.gene_table()
    assert list(t.columns) == ["entrez_id", "symbol", "ensembl_id", "gene_name", "gene_type", "chromosome"]
    assert len(t) == 19461
    assert (t["gene_type"] == "protein-coding").all()
    assert t["ensembl_id"].str.match(r"^ENSG\d{11}$").all()
    assert t["entrez_id"].astype(int).is_monotonic_increasing
    assert t.iloc[0][["entrez_id", "symbol"]].tolist() == ["1", "A1BG"]
    assert set(t.loc[t["chromosome"] == "MT", "symbol"]) == set(G.MITO_GENES)
    sub = G.gene_table(entrez=[7157, "5720"])
    assert sub["symbol"].tolist() == ["PSME1", "TP53"]
    pd.testing.assert_frame_equal(G.gene_table(), t)


def test_all_978_landmark_genes_of_the_real_plate_map():
    rows = read_gct(GCT).row_meta
    by_entrez = G.entrez_to_ensembl(rows["pr_gene_id"])
    assert len(by_entrez) == 978
    # measured: every landmark Entrez ID is current and has an Ensembl gene, none shared
    assert (by_entrez["method"] == "unmapped").sum() == 0
    assert by_entrez["ensembl_id"].is_unique
    by_symbol = G.symbols_to_ensembl(rows["pr_gene_symbol"])
    counts = by_symbol["method"].value_counts().to_dict()
    # measured: 43 of the 2014 symbols are previous symbols; 4 are ambiguous aliases
    assert counts == {"symbol": 931, "previous_symbol": 43, "unmapped": 4}
    assert sorted(by_symbol.loc[by_symbol["method"] == "unmapped", "input"]) == ["B3GNT1", "CD97", "CHP", "HN1L"]
    mapped = by_symbol["method"] != "unmapped"
    # where the symbol route maps, it agrees with the Entrez route
    assert (by_symbol.loc[mapped, "ensembl_id"].to_numpy() == by_entrez.loc[mapped, "ensembl_id"].to_numpy()).all()


def test_database_path_is_overridable_and_a_missing_file_is_named(monkeypatch, tmp_path):
    missing = tmp_path / "nowhere.sqlite"
    monkeypatch.setenv("CPB_ORG_HS_DB", str(missing))
    assert G.org_hs_db_path() == missing
    with pytest.raises(FileNotFoundError, match="nowhere.sqlite"):
        G.entrez_to_ensembl([7157])


def test_symbol_lookup_is_fast_enough_for_a_whole_transcriptome():
    symbols = G.gene_table(gene_type=None)["symbol"].tolist()  # ~40k genes with an Ensembl ID
    import time
    start = time.perf_counter()
    out = G.symbols_to_ensembl(symbols)
    assert time.perf_counter() - start < 5
    assert (out["method"] == "symbol").mean() > 0.99
