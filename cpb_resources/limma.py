"""limma / edgeR through rpy2: one stratum's fit (METHODS §3).

The R side is ``r_scripts/limma_de.R`` in the repository, sourced once per
process into its own R environment. Data cross the boundary only as R
objects: the expression matrix, the design and the contrast matrix are built
here with generated safe names (``s00001`` samples, ``g000001`` genes, the
caller's coefficient and contrast names, which must match
``[A-Za-z][A-Za-z0-9_]*``), names are set with R's ``rownames<-`` /
``colnames<-`` (rpy2 3.5 silently ignores Python-side assignment), and the
results are mapped back to the real gene IDs by name.

rpy2 serialises every call behind one lock; parallel fits need processes.
"""
from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

SCRIPT_ENV = "CPB_LIMMA_SCRIPT"
R_FUNCTION = "cpb_limma_de"
SAFE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
TABLE_COLUMNS = ["logFC", "AveExpr", "t", "P.Value", "adj.P.Val", "B", "CI.L", "CI.R"]

_lock = threading.Lock()
_loaded: dict[str, object] = {}  # script path -> R function


class LimmaFitError(RuntimeError):
    """limma/edgeR failed on one stratum; the message names the stratum and R's reason."""

    def __init__(self, stratum: str, problem: str):
        self.stratum = stratum
        self.problem = problem
        super().__init__(f"limma fit of stratum '{stratum}' failed: {problem}")


class NothingToFit(LimmaFitError):
    """The data leave nothing to fit (e.g. filterByExpr keeps fewer than 2 genes)."""

    def __init__(self, stratum: str, problem: str, genes_kept: int):
        self.genes_kept = genes_kept
        super().__init__(stratum, problem)


def default_script_path() -> Path:
    """Locate ``r_scripts/limma_de.R``.

    ``$CPB_LIMMA_SCRIPT`` wins; otherwise the file beside the package in the
    repository (the layout of a checkout and of an editable install).
    """
    env = os.environ.get(SCRIPT_ENV)
    if env:
        return Path(env).resolve()
    return (Path(__file__).resolve().parent.parent / "r_scripts" / "limma_de.R")


def r_objects():
    """``rpy2.robjects``, with the process environment left as it was.

    Starting R through rpy2 prepends R's library folders (``/usr/lib/R/lib``,
    ``/usr/lib/x86_64-linux-gnu`` …) to ``LD_LIBRARY_PATH`` of this process.
    Every Python subprocess started afterwards (a compute unit, ``dagster
    dev``) would then load the system's libpython instead of the one it was
    built with and fail to import ``ssl``. R's libraries are already loaded
    by then, so the variable is put back.
    """
    import os

    saved = os.environ.get("LD_LIBRARY_PATH")
    import rpy2.robjects as ro

    ro.r("NULL")  # start R now, so the restore below is the last word
    if saved is None:
        os.environ.pop("LD_LIBRARY_PATH", None)
    else:
        os.environ["LD_LIBRARY_PATH"] = saved
    return ro


def _r_function(script: Path):
    """Source the R script once per process into a fresh environment."""
    ro = r_objects()

    key = str(script)
    if key not in _loaded:
        if not script.is_file():
            raise FileNotFoundError(f"R script for the DE layer not found: {script} "
                                    f"(set ${SCRIPT_ENV} to its path)")
        env = ro.r["new.env"]()
        ro.r["source"](key, local=env)  # the path travels as an R string object, not as code
        _loaded[key] = env[R_FUNCTION]
    return _loaded[key]


@dataclass
class LimmaResult:
    """One stratum's fit, genes in rows and contrasts in columns.

    Attributes
    ----------
    genes
        Real gene IDs of the fitted genes (after filterByExpr on the count route).
    contrasts
        Contrast names, the columns of every matrix.
    tables
        topTable columns (``logFC``, ``AveExpr``, ``t``, ``P.Value``,
        ``adj.P.Val`` (BH within a contrast), ``B``, ``CI.L``, ``CI.R``), each
        a (genes × contrasts) array. logFC in log2 units.
    stdev_unscaled
        (genes × contrasts) unscaled standard deviations of the contrasts.
    sigma, s2_post, df_total, df_prior, s2_prior
        Per-gene residual SD, posterior variance, total and prior degrees of
        freedom and prior variance (robust eBayes gives per-gene priors).
    genes_kept, n_samples
        Genes kept by filterByExpr (all genes on the normalized route) and samples fitted.
    warnings
        R warnings raised during the fit.
    """

    genes: list[str]
    contrasts: list[str]
    tables: dict[str, np.ndarray]
    stdev_unscaled: np.ndarray
    sigma: np.ndarray
    s2_post: np.ndarray
    df_total: np.ndarray
    df_prior: np.ndarray
    s2_prior: np.ndarray
    df_residual: np.ndarray
    genes_kept: int
    n_samples: int
    warnings: list[str] = field(default_factory=list)


def _r_matrix(values: np.ndarray, rownames: list[str], colnames: list[str]):
    import rpy2.robjects as ro

    values = np.asarray(values, dtype=float)
    m = ro.r["matrix"](ro.FloatVector(values.ravel(order="F")), nrow=values.shape[0], ncol=values.shape[1])
    m = ro.r["rownames<-"](m, ro.StrVector(rownames))
    m = ro.r["colnames<-"](m, ro.StrVector(colnames))
    return m


def _copy(rvec) -> np.ndarray:
    """An R numeric vector as an owned numpy array.

    ``np.asarray`` on an rpy2 vector is a view on R's memory, which R frees
    and reuses once the object is collected: always copy.
    """
    return np.array(rvec, dtype=float, copy=True)


def _np_matrix(rmat, rows: list[str], cols: list[str]) -> np.ndarray:
    """An R numeric matrix as a (rows × cols) array, checked by name."""
    import rpy2.robjects as ro

    dim = tuple(int(d) for d in ro.r["dim"](rmat))
    arr = _copy(rmat).reshape(dim, order="F")
    rn = list(ro.r["rownames"](rmat))
    cn = list(ro.r["colnames"](rmat))
    if rn != rows or cn != cols:  # reorder by name should R ever reorder
        arr = pd.DataFrame(arr, index=rn, columns=cn).loc[rows, cols].to_numpy()
    return arr


def fit_limma(x: np.ndarray, genes: list[str], design: pd.DataFrame, contrasts: pd.DataFrame,
              normalized: bool, stratum: str, script: str | Path | None = None) -> LimmaResult:
    """Run the METHODS §3 fit on one stratum.

    Parameters
    ----------
    x
        (genes × samples) matrix: integer counts (count route) or normalized
        log2 expression (normalized route), samples in the row order of `design`.
    genes
        Real gene IDs of the rows of `x` (any strings; they never reach R).
    design
        (samples × coefficients) design matrix; columns must be safe names.
    contrasts
        (coefficients × contrasts) matrix; index = `design.columns`, columns safe names.
    normalized
        True for the L1000 route (no filter/TMM/voom, ``eBayes(trend=TRUE)``).
    stratum
        Stratum identifier, used in error messages.
    script
        Path of ``limma_de.R``; default :func:`default_script_path`.

    Raises
    ------
    LimmaFitError
        R failed; names the stratum and gives R's message.
    ValueError
        Shapes or names do not line up (a programming error upstream).
    """
    import rpy2.robjects as ro
    from rpy2.rinterface_lib.embedded import RRuntimeError

    x = checked_fit_inputs(x, genes, design, contrasts, stratum)
    n_genes, n_samples = x.shape
    if len(set(genes)) != len(genes):
        raise ValueError(f"stratum '{stratum}': duplicate gene IDs")
    safe_genes = [f"g{i:06d}" for i in range(1, n_genes + 1)]
    safe_samples = [f"s{i:05d}" for i in range(1, n_samples + 1)]
    gene_of = dict(zip(safe_genes, genes))
    coefs, cons = [str(c) for c in design.columns], [str(c) for c in contrasts.columns]

    with _lock:
        fn = _r_function(Path(script) if script else default_script_path())
        try:
            res = fn(_r_matrix(x, safe_genes, safe_samples),
                     _r_matrix(design.to_numpy(dtype=float), safe_samples, coefs),
                     _r_matrix(contrasts.to_numpy(dtype=float), coefs, cons),
                     ro.BoolVector([bool(normalized)]))
        except RRuntimeError as exc:
            raise LimmaFitError(stratum, str(exc).strip()) from None
        out = dict(zip(res.names, res))
        if str(out["nothing_to_fit"][0]):
            raise NothingToFit(stratum, str(out["nothing_to_fit"][0]), int(out["genes_kept"][0]))
        fit_genes = list(out["genes"])
        tables_r = dict(zip(out["tables"].names, out["tables"]))
        tables = {k: _np_matrix(tables_r[k], fit_genes, cons) for k in TABLE_COLUMNS}
        result = LimmaResult(
            genes=[gene_of[g] for g in fit_genes],
            contrasts=list(out["contrasts"]),
            tables=tables,
            stdev_unscaled=_np_matrix(out["stdev_unscaled"], fit_genes, cons),
            sigma=_copy(out["sigma"]),
            s2_post=_copy(out["s2_post"]),
            df_total=_copy(out["df_total"]),
            df_prior=_copy(out["df_prior"]),
            s2_prior=_copy(out["s2_prior"]),
            df_residual=_copy(out["df_residual"]),
            genes_kept=int(out["genes_kept"][0]),
            n_samples=int(out["n_samples"][0]),
            warnings=[str(w) for w in out["warnings"]],
        )
    if result.contrasts != cons:
        raise LimmaFitError(stratum, f"R returned contrasts {result.contrasts[:3]}… not {cons[:3]}…")
    return result


def checked_fit_inputs(x, genes, design: pd.DataFrame, contrasts: pd.DataFrame, stratum: str) -> np.ndarray:
    """The expression matrix as float64, after the shape and name checks both engines share.

    Raises
    ------
    ValueError
        Matrix, gene list and design disagree; contrast rows are not the design columns; a
        coefficient or contrast name is not a safe identifier.
    """
    x = np.asarray(x, dtype=float)
    n_genes, n_samples = x.shape
    if len(genes) != n_genes or len(design) != n_samples:
        raise ValueError(f"stratum '{stratum}': matrix {x.shape} vs {len(genes)} genes, {len(design)} design rows")
    if list(contrasts.index) != list(design.columns):
        raise ValueError(f"stratum '{stratum}': contrast rows must equal design columns")
    for name in [*design.columns, *contrasts.columns]:
        if not SAFE_NAME.match(str(name)):
            raise ValueError(f"stratum '{stratum}': unsafe coefficient/contrast name {name!r}")
    return x


class LimmaResource(dg.ConfigurableResource):
    """limma/edgeR (R 4.2, limma 3.54, edgeR 3.40) through rpy2.

    Attributes
    ----------
    script_path
        Path of ``limma_de.R``; empty: ``$CPB_LIMMA_SCRIPT`` or the repository copy.
    engine
        ``r`` (default, the reference): limma/edgeR in R. ``fast``: the numpy engine of
        :mod:`cpb_resources.fast_limma`, equal to R to ~1e-13 in the parity tests (docs/de.md).
    """

    script_path: str = ""
    engine: str = "r"

    def script(self) -> Path:
        return Path(self.script_path).resolve() if self.script_path else default_script_path()

    def fit(self, x: np.ndarray, genes: list[str], design: pd.DataFrame, contrasts: pd.DataFrame,
            normalized: bool, stratum: str) -> LimmaResult:
        """See :func:`fit_limma`."""
        if self.engine == "fast":
            from cpb_resources.fast_limma import fit_fast

            return fit_fast(x, genes, design, contrasts, normalized, stratum)
        if self.engine != "r":
            raise ValueError(f"DE engine must be 'r' or 'fast', got {self.engine!r}")
        return fit_limma(x, genes, design, contrasts, normalized, stratum, script=self.script())

    def versions(self) -> dict[str, str]:
        """R, limma and edgeR versions, for provenance metadata."""
        import rpy2.robjects as ro

        with _lock:
            get = ro.r["packageVersion"]
            return {"R": str(ro.r["R.version.string"][0]),
                    "limma": str(ro.r["as.character"](get("limma"))[0]),
                    "edgeR": str(ro.r["as.character"](get("edgeR"))[0])}
