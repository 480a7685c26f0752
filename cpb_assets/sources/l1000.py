"""LINCS L1000 Phase I (GSE92742) and Phase II (GSE70138): Level 3 INF GCTX +
instance / perturbagen / cell info tables → harmonized AnnData.

Rules (METHODS §1–2): keep ``trt_cp`` and DMSO ``ctl_vehicle``; plate =
``det_plate``; doses to µM and times to hours; the 978 landmark genes, Entrez →
Ensembl; CIDs from the compound registry (the L1000 DE labels use them).
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from cpb_assets.errors import SourceFormatError
from cpb_assets.harmonize.assemble import assemble_harmonized, is_synthetic
from cpb_assets.harmonize.contexts import cell_line_to_cellosaurus, resolve_cell_types
from cpb_assets.harmonize.quarantine import Quarantine
from cpb_assets.harmonize.units import UnitError, dose_to_uM, parse_dose, parse_time, time_to_h
from cpb_assets.sources.base import Harmonized, RemoteFile, empty_compound_records, find_source_file
from cpb_assets.sources.gctx import GCT, read_gct, read_gctx, write_gctx

KEPT_PERT_TYPES = {"trt_cp", "ctl_vehicle"}
MISSING = {"-666", "-666.0", "", "nan", "None"}
INST_REQUIRED = ["inst_id", "pert_id", "pert_iname", "pert_type", "cell_id"]

_GEO = "https://ftp.ncbi.nlm.nih.gov/geo/series"
REMOTE_FILES: dict[str, list[RemoteFile]] = {
    "l1000_phase1": [
        RemoteFile(f"{_GEO}/GSE92nnn/GSE92742/suppl/{f}", f, None, "LINCS data policy")
        for f in ["GSE92742_Broad_LINCS_Level3_INF_mlr12k_n1319138x12328.gctx.gz",
                  "GSE92742_Broad_LINCS_inst_info.txt.gz", "GSE92742_Broad_LINCS_pert_info.txt.gz",
                  "GSE92742_Broad_LINCS_cell_info.txt.gz", "GSE92742_Broad_LINCS_gene_info.txt.gz"]
    ],
    "l1000_phase2": [
        RemoteFile(f"{_GEO}/GSE70nnn/GSE70138/suppl/{f}", f, None, "LINCS data policy")
        for f in ["GSE70138_Broad_LINCS_Level3_INF_mlr12k_n345976x12328_2017-03-06.gctx.gz",
                  "GSE70138_Broad_LINCS_inst_info_2017-03-06.txt.gz",
                  "GSE70138_Broad_LINCS_pert_info_2017-03-06.txt.gz",
                  "GSE70138_Broad_LINCS_cell_info_2017-04-28.txt.gz",
                  "GSE70138_Broad_LINCS_gene_info_2017-03-06.txt.gz"]
    ],
}
GSE = {"l1000_phase1": "GSE92742", "l1000_phase2": "GSE70138"}


# --------------------------------------------------------------------------- reading

def read_info_table(path: str | Path, required: list[str] = ()) -> pd.DataFrame:
    """Read a LINCS info table (tab-separated, UTF-8, optionally gzipped).

    Any newline convention is accepted (the LINCS files exist with LF, CRLF
    and old-Mac CR endings). Values stay strings; ``-666`` means missing.

    Raises
    ------
    SourceFormatError
        Not UTF-8 (naming the line and column of the first bad byte), a
        required column missing, or a malformed table.
    """
    path = Path(path)
    raw = path.read_bytes()
    if path.suffix == ".gz":
        import gzip
        raw = gzip.decompress(raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_no = raw[:exc.start].count(b"\n") + raw[:exc.start].count(b"\r") - raw[:exc.start].count(b"\r\n") + 1
        line_start = max(raw.rfind(b"\n", 0, exc.start), raw.rfind(b"\r", 0, exc.start)) + 1
        header = raw.splitlines()[0].decode("utf-8", "replace").split("\t")
        col = raw[line_start:exc.start].count(b"\t")
        field = header[col] if col < len(header) else f"column {col + 1}"
        raise SourceFormatError(path, field, f"byte 0x{raw[exc.start]:02x} on line {line_no} is not UTF-8 "
                                             f"(a latin-1 'µ'? re-save the file as UTF-8)") from exc
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    try:
        df = pd.read_csv(io.StringIO(text), sep="\t", dtype=str, keep_default_na=False)
    except pd.errors.ParserError as exc:
        raise SourceFormatError(path, "<table>", f"malformed table ({exc})") from exc
    for col in required:
        if col not in df.columns:
            raise SourceFormatError(path, col, "required column missing")
    return df


# (value column, unit column, "<value> <unit>" text column, converter of a pair, parser of a text)
_QUANTITIES = {
    "dose": ("pert_dose", "pert_dose_unit", "pert_idose", dose_to_uM, parse_dose),
    "time": ("pert_time", "pert_time_unit", "pert_itime", time_to_h, parse_time),
}


def _quantity(inst: pd.DataFrame, file: Path, kind: str) -> np.ndarray:
    """Dose in µM or time in hours per instance, from ``pert_<x>`` + ``pert_<x>_unit`` or a
    ``pert_i<x>`` string (``"10 µM"``, ``"24 h"``); controls get dose 0; missing stays NaN."""
    value, unit, text, from_pair, from_text = _QUANTITIES[kind]
    has_pair = value in inst.columns and unit in inst.columns
    if not has_pair and text not in inst.columns:
        raise SourceFormatError(file, value, f"neither {value}/{unit} nor {text} present")
    out = np.full(len(inst), np.nan)
    control = (inst["pert_type"] != "trt_cp").to_numpy() if kind == "dose" else np.zeros(len(inst), bool)
    for i, row in enumerate(inst.itertuples(index=False)):
        if control[i]:
            out[i] = 0.0
            continue
        try:
            if has_pair and str(getattr(row, value)) not in MISSING:
                out[i] = from_pair(float(getattr(row, value)), str(getattr(row, unit)))
            elif text in inst.columns and str(getattr(row, text)) not in MISSING:
                out[i] = from_text(getattr(row, text))
        except (UnitError, ValueError) as exc:
            raise SourceFormatError(file, unit if has_pair else text, f"instance {row.inst_id}: {exc}") from exc
    return out


def _metadata_from_gct(gct: GCT) -> pd.DataFrame:
    """Instance metadata carried inside a GCT(X) (as in single-plate files)."""
    inst = gct.col_meta.copy()
    for c in inst.columns:
        inst[c] = [("-666" if (isinstance(v, float) and v == -666) else
                    (f"{v:g}" if isinstance(v, float) else str(v))) for v in inst[c]]
    inst.insert(0, "inst_id", inst.index.astype(str))
    return inst.reset_index(drop=True)


def harmonize_gct(gct: GCT, inst: pd.DataFrame, *, dataset: str, registry: pd.DataFrame,
                  matrix_file: Path, inst_file: Path) -> Harmonized:
    """Harmonize an L1000 matrix with its instance metadata.

    Parameters
    ----------
    gct
        Level 3 matrix (genes × instances).
    inst
        Instance metadata (``inst_info`` columns, strings).
    registry
        ``source_id`` (= pert_id) → ``pubchem_cid, cid_method``.
    """
    q = Quarantine(dataset)
    for col in INST_REQUIRED:
        if col not in inst.columns:
            raise SourceFormatError(inst_file, col, "required column missing")
    if inst["inst_id"].duplicated().any():
        dup = inst.loc[inst["inst_id"].duplicated(), "inst_id"].unique()[:5].tolist()
        raise SourceFormatError(inst_file, "inst_id", f"duplicate instance IDs {dup}")
    keep = inst["pert_type"].isin(KEPT_PERT_TYPES)
    for pt, grp in inst[~keep].groupby("pert_type"):
        q.add(inst_file, grp["inst_id"], f"pert_type {pt} not kept (trt_cp and ctl_vehicle only)")
    inst = inst[keep]
    non_dmso = (inst["pert_type"] == "ctl_vehicle") & (inst["pert_iname"].str.upper() != "DMSO")
    q.add(inst_file, inst.loc[non_dmso, "inst_id"], "vehicle control other than DMSO")
    inst = inst[~non_dmso]
    in_matrix = inst["inst_id"].isin(gct.col_meta.index)
    q.add(inst_file, inst.loc[~in_matrix, "inst_id"], "no profile in the GCTX")
    inst = inst[in_matrix].reset_index(drop=True)

    dose = _quantity(inst, inst_file, "dose")
    time = _quantity(inst, inst_file, "time")
    bad = ~np.isfinite(dose) | ~np.isfinite(time)
    q.add(inst_file, inst.loc[bad, "inst_id"], "dose or time missing")
    # instances without dose/time were quarantined above; the rest are checked for their cell line
    cell = pd.Series(None, index=inst.index, dtype=object)
    cell[~bad] = resolve_cell_types(inst.loc[~bad, "cell_id"].set_axis(inst.loc[~bad, "inst_id"]), q,
                                    inst_file).to_numpy()
    unknown_cell = cell.isna().to_numpy()
    ok = ~bad & ~unknown_cell
    inst, dose, time, cell = inst[ok].reset_index(drop=True), dose[ok], time[ok], cell[ok].reset_index(drop=True)

    if "det_plate" in inst.columns and "det_well" in inst.columns:
        plate, well = inst["det_plate"], inst["det_well"]
    else:  # Phase I inst_info: inst_id = "<det_plate>:<det_well>"
        parts = inst["inst_id"].str.rsplit(":", n=1)
        if not parts.map(len).eq(2).all():
            raise SourceFormatError(inst_file, "det_plate", "absent, and inst_id is not '<plate>:<well>'")
        plate, well = parts.str[0], parts.str[1]

    genes, unmapped = _landmark_genes(gct, matrix_file, q)
    cols = gct.col_meta.index.get_indexer(inst["inst_id"])
    X = gct.data[np.ix_(genes["row"].to_numpy(), cols)].T.astype(np.float32)
    samples = pd.DataFrame({
        "plate": plate.to_numpy(), "well": well.to_numpy(), "cell_type": cell.to_numpy(),
        "perturbagen": inst["pert_iname"].to_numpy(), "perturbagen_name": inst["pert_iname"].to_numpy(),
        "pert_id": inst["pert_id"].to_numpy(),
        "is_control": (inst["pert_type"] == "ctl_vehicle").to_numpy(),
        "pert_dose_uM": dose, "pert_time_h": time,
        "source_id": inst["pert_id"].where(inst["pert_type"] == "trt_cp", None).to_numpy(),
    })
    synthetic = is_synthetic(Path(matrix_file), Path(inst_file), _gctx_synthetic_attr(matrix_file))
    adata = assemble_harmonized(samples, X, genes.set_index("ensembl_id"), dataset=dataset, synthetic=synthetic,
                                registry=registry, file=str(inst_file))
    notes = {"instances_kept": int(adata.n_obs), "instances_dropped": int(q.to_frame()["n"].sum()),
             "genes": int(adata.n_vars), "genes_unmapped": int(len(unmapped))}
    return Harmonized(adata, q, unmapped, notes)


def _gctx_synthetic_attr(path: Path):
    """The GCTX root attribute ``synthetic`` (the demo writer's label), None for other files."""
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            return fh.attrs.get("synthetic")
    except OSError:  # GCT text, not HDF5
        return None


def _landmark_genes(gct: GCT, matrix_file: Path, q: Quarantine) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Landmark rows with their Ensembl IDs; unmapped and duplicate genes quarantined."""
    from cpb_assets.harmonize.genes import entrez_to_ensembl

    rm = gct.row_meta
    if "pr_gene_id" not in rm.columns:
        raise SourceFormatError(matrix_file, "0/META/ROW/pr_gene_id", "Entrez gene IDs missing")
    rows = np.arange(len(rm))
    if "pr_is_lmark" in rm.columns:
        lm = pd.to_numeric(rm["pr_is_lmark"], errors="coerce").fillna(0).to_numpy() == 1
        rows = rows[lm]
    entrez = pd.Series(rm["pr_gene_id"].to_numpy()[rows]).map(lambda v: str(int(float(v))))
    mapped = entrez_to_ensembl(entrez.tolist())
    table = pd.DataFrame({"row": rows, "entrez_id": entrez.to_numpy(),
                          "ensembl_id": mapped["ensembl_id"].to_numpy(), "symbol": mapped["symbol"].to_numpy()})
    unmapped = table[table["ensembl_id"].isna()]
    q.add(matrix_file, unmapped["entrez_id"], "Entrez ID without an Ensembl gene", level="gene")
    table = table[table["ensembl_id"].notna()]
    dup = table["ensembl_id"].duplicated()
    q.add(matrix_file, table.loc[dup, "entrez_id"], "second Entrez ID for the same Ensembl gene", level="gene")
    table = table[~dup]
    unmapped_frame = pd.DataFrame({"input": unmapped["entrez_id"].to_numpy(),
                                   "reason": "Entrez ID without an Ensembl gene"})
    return table, unmapped_frame


def _read_folder(folder: Path, dataset: str) -> tuple[GCT, pd.DataFrame, Path, Path]:
    matrix_file = find_source_file(folder, "*Level3*.gctx")
    inst_file = find_source_file(folder, "*inst_info*.txt*", required=False)
    if inst_file is None:  # single-plate files carry their metadata in the GCTX columns
        gct = read_gctx(matrix_file)
        return gct, _metadata_from_gct(gct), matrix_file, matrix_file
    inst = read_info_table(inst_file, INST_REQUIRED)
    # read only the kept instances and the landmark genes: the real matrices do not fit in memory
    wanted = inst.loc[inst["pert_type"].isin(KEPT_PERT_TYPES), "inst_id"] if "pert_type" in inst.columns else None
    landmarks = _landmark_probe_ids(folder)
    return read_gctx(matrix_file, row_ids=landmarks, col_ids=wanted), inst, matrix_file, inst_file


def _landmark_probe_ids(folder: Path) -> list[str] | None:
    """Row IDs of the landmark genes from the gene_info table (None: no table, keep all rows).

    Real Level 3 GCTX rows are Entrez IDs as text and the gene table marks
    landmarks with ``pr_is_lm == 1``.
    """
    gene_file = find_source_file(folder, "*gene_info*.txt*", required=False)
    if gene_file is None:
        return None
    info = read_info_table(gene_file, ["pr_gene_id"])
    flag = "pr_is_lm" if "pr_is_lm" in info.columns else ("pr_is_lmark" if "pr_is_lmark" in info.columns else None)
    if flag is None:
        raise SourceFormatError(gene_file, "pr_is_lm", "landmark flag column missing")
    ids = info.loc[info[flag].astype(str).str.strip().isin(["1", "1.0"]), "pr_gene_id"].astype(str)
    # rows may be plain Entrez IDs (real files) or '<entrez>_at' probe IDs (the synthetic stand-in)
    return sorted(set(ids) | {f"{i}_at" for i in ids})


def harmonize(folder: str | Path, dataset: str, registry: pd.DataFrame) -> Harmonized:
    """Harmonize one L1000 phase from its native files in `folder`."""
    gct, inst, matrix_file, inst_file = _read_folder(Path(folder), dataset)
    return harmonize_gct(gct, inst, dataset=dataset, registry=registry, matrix_file=matrix_file,
                         inst_file=inst_file)


def compound_records(folder: str | Path, dataset: str) -> pd.DataFrame:
    """Compounds named by the pert_info table (or, without one, by the instances)."""
    folder = Path(folder)
    pert_file = find_source_file(folder, "*pert_info*.txt*", required=False)
    if pert_file is not None:
        pert = read_info_table(pert_file, ["pert_id", "pert_iname", "pert_type"])
        pert = pert[pert["pert_type"] == "trt_cp"]
    else:
        _, inst, _, _ = _read_folder(folder, dataset)
        pert = inst[inst["pert_type"] == "trt_cp"].drop_duplicates("pert_id")
    if pert.empty:
        return empty_compound_records()

    def col(name):
        if name not in pert.columns:
            return [None] * len(pert)
        return [None if str(v) in MISSING else str(v) for v in pert[name]]

    return pd.DataFrame({"source_id": pert["pert_id"].to_numpy(), "name": col("pert_iname"),
                         "smiles": col("canonical_smiles"), "inchikey": col("inchi_key"),
                         "catalog_id": pert["pert_id"].to_numpy()}).drop_duplicates("source_id")


# --------------------------------------------------------------------------- synthetic writer
def _dose_string(dose_uM: float, rng: np.random.Generator) -> tuple[str, str, str]:
    """(pert_dose, pert_dose_unit, pert_idose) in the mixed units real LINCS tables use."""
    if dose_uM < 1 or rng.random() < 0.25:
        v, unit = dose_uM * 1000, "nM"
    else:
        v, unit = dose_uM, "µM"
    txt = f"{v:.6g}"
    return txt, unit, f"{txt} {unit}"


def write_synthetic(world, dataset: str, folder: str | Path) -> list[Path]:
    """Write a SYNTHETIC L1000 phase in the LINCS native layout.

    Files: ``<GSE>_SYNTHETIC_Level3_INF.gctx`` (landmark genes × instances,
    log2 normalized values, row ids ``<entrez>_at``), ``…_inst_info.txt``
    (doses and times as unit strings), ``…_pert_info.txt``,
    ``…_cell_info.txt``, ``…_gene_info.txt``. The GCTX carries a
    ``synthetic`` attribute. Some compounds lack structures in pert_info (the
    registry must fall back to names / IDs), a few positive-control and
    non-DMSO vehicle wells are planted for the filters.
    """
    from cpb_assets.sources.demo_world import DESIGNS, SYNTHETIC_NOTE
    from cpb_resources.storage import atomic_path

    folder = Path(folder)
    design = DESIGNS[dataset]
    rng = world.rng(dataset, "l1000")
    gse = GSE[dataset]
    lm = world.genes[world.genes["is_landmark"]]
    gidx = world.gene_index(lm.index)
    comps = world.compounds
    rows: list[dict] = []
    phase_tag = "P1" if dataset == "l1000_phase1" else "P2"
    for ct in design.cell_types:
        cell_name = world_cell_name(ct)
        for t in design.times_h:
            cset = design.compounds if t == 24.0 else design.extra.get("time_6h_compounds", ())
            if not cset:
                continue
            for rep in range(1, design.replicates + 1):
                plate = f"SYN{phase_tag}_{cell_name}_{int(t)}H_X{rep}_B{10 + rep}"
                wells = iter(f"{r}{c:02d}" for r in "ABCDEFGHIJKLMNOP" for c in range(1, 25))
                for _ in range(8):
                    rows.append(dict(det_plate=plate, det_well=next(wells), pert_id="DMSO", pert_iname="DMSO",
                                     pert_type="ctl_vehicle", dose=0.0, time=t, cell_id=cell_name, compound=None))
                for c in cset:
                    doses = design.doses_uM if t == 24.0 else (max(design.doses_uM),)
                    for d in doses:
                        rows.append(dict(det_plate=plate, det_well=next(wells), pert_id=comps["brd_id"].iloc[c],
                                         pert_iname=comps["name"].iloc[c], pert_type="trt_cp", dose=d, time=t,
                                         cell_id=cell_name, compound=c))
                # filters' fodder: a positive control and a non-DMSO vehicle per plate
                rows.append(dict(det_plate=plate, det_well=next(wells), pert_id="BRD-SPOSCTRL", pert_iname="poscon",
                                 pert_type="trt_poscon", dose=10.0, time=t, cell_id=cell_name, compound=None))
                rows.append(dict(det_plate=plate, det_well=next(wells), pert_id="PBS", pert_iname="PBS",
                                 pert_type="ctl_vehicle", dose=0.0, time=t, cell_id=cell_name, compound=None))
    inst = pd.DataFrame(rows)
    inst["inst_id"] = inst["det_plate"] + ":" + inst["det_well"]
    # expression: baseline + truth + plate effect + noise, on L1000's log2 scale
    X = np.empty((len(inst), len(gidx)), dtype=np.float32)
    base = world.baseline[:, gidx].astype(float) + 3.0
    for plate, grp in inst.groupby("det_plate", sort=False):
        shift = world.plate_effect(dataset, plate, len(gidx), 0.15)
        for i in grp.index:
            r = inst.loc[i]
            comp = None if r["compound"] is None or pd.isna(r["compound"]) else int(r["compound"])
            ct = cell_line_to_cellosaurus(r["cell_id"])
            mu = base[world.context_index(ct)] + world.true_logfc(comp, ct, r["dose"], r["time"], gidx) + shift
            X[i] = mu + rng.normal(0.0, 0.3, len(gidx))
    gct = GCT(X.T, pd.DataFrame({"pr_gene_id": lm["entrez_id"].astype(int).to_numpy(),
                                 "pr_gene_symbol": lm["symbol"].to_numpy(), "pr_is_lmark": 1},
                                index=pd.Index([f"{e}_at" for e in lm["entrez_id"]], name="id")),
              inst.set_index("inst_id")[["det_plate", "det_well", "pert_id", "pert_type"]])
    dose_parts = [_dose_string(d, rng) if pt != "ctl_vehicle" else ("-666", "-666", "-666")
                  for d, pt in zip(inst["dose"], inst["pert_type"])]
    inst_info = pd.DataFrame({
        "inst_id": inst["inst_id"], "det_plate": inst["det_plate"], "det_well": inst["det_well"],
        "rna_plate": inst["det_plate"].str.rsplit("_", n=1).str[0], "rna_well": inst["det_well"],
        "pert_id": inst["pert_id"], "pert_iname": inst["pert_iname"], "pert_type": inst["pert_type"],
        "pert_dose": [p[0] for p in dose_parts], "pert_dose_unit": [p[1] for p in dose_parts],
        "pert_idose": [p[2] for p in dose_parts],
        "pert_time": inst["time"].map(lambda v: f"{v:g}"), "pert_time_unit": "h",
        "pert_itime": inst["time"].map(lambda v: f"{v:g} h"), "cell_id": inst["cell_id"],
    })
    used = sorted({int(c) for c in inst["compound"].dropna()})
    # every 7th compound ships without structure: the registry falls back to the BRD ID / name
    pert_info = pd.DataFrame({
        "pert_id": comps["brd_id"].iloc[used].to_numpy(), "pert_iname": comps["name"].iloc[used].to_numpy(),
        "pert_type": "trt_cp", "is_touchstone": "0",
        "inchi_key": [("-666" if c % 7 == 3 else comps["inchikey"].iloc[c]) for c in used],
        "canonical_smiles": [("-666" if c % 7 == 3 else comps["smiles"].iloc[c]) for c in used],
        "pubchem_cid": "-666",
    })
    pert_info = pd.concat([pert_info, pd.DataFrame([{"pert_id": "DMSO", "pert_iname": "DMSO",
                                                     "pert_type": "ctl_vehicle"}])], ignore_index=True).fillna("-666")
    cells = sorted(inst["cell_id"].unique())
    cell_info = pd.DataFrame({"cell_id": cells, "cell_type": "cell line",
                              "cellosaurus_id": [cell_line_to_cellosaurus(c) for c in cells]})
    gene_info = pd.DataFrame({"pr_gene_id": lm["entrez_id"].to_numpy(), "pr_gene_symbol": lm["symbol"].to_numpy(),
                              "pr_is_lm": "1", "pr_is_bing": "1"})
    folder.mkdir(parents=True, exist_ok=True)
    prefix = f"{gse}_SYNTHETIC"
    written = []
    with atomic_path(folder / f"{prefix}_Level3_INF.gctx") as tmp:
        write_gctx(gct, tmp, attrs={"synthetic": np.bytes_(SYNTHETIC_NOTE.encode())})
    written.append(folder / f"{prefix}_Level3_INF.gctx")
    for name, table in [("inst_info", inst_info), ("pert_info", pert_info), ("cell_info", cell_info),
                        ("gene_info", gene_info)]:
        path = folder / f"{prefix}_{name}.txt"
        with atomic_path(path) as tmp:
            table.to_csv(tmp, sep="\t", index=False, encoding="utf-8")
        written.append(path)
    return written


def world_cell_name(cell_type: str) -> str:
    """The LINCS-style cell_id of a Cellosaurus context (e.g. CVCL_0023 → A549)."""
    from cpb_assets.harmonize.contexts import CONTEXTS
    return str(CONTEXTS.loc[cell_type, "name"])
