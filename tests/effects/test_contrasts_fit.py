"""r_scripts/limma_de.R's cpb_contrasts_fit against limma's contrasts.fit: bit-identical without
weights (the L1000 route), equal to rounding with weights (voom), limma itself otherwise."""
import pytest

from cpb_resources.limma import default_script_path

pytestmark = pytest.mark.r

CHECK = """
function(script) {
  env <- new.env()
  sys.source(script, envir = env)
  suppressPackageStartupMessages(library(limma))
  set.seed(7)
  cond <- factor(c(paste0("T", 1:30), rep(c("D1", "D2"), each = 6)))
  plate <- factor(rep(paste0("P", 1:6), length.out = length(cond)))
  X <- model.matrix(~0 + cond + plate)
  cm <- matrix(0, ncol(X), 30, dimnames = list(colnames(X), NULL))
  for (j in 1:30) { cm[j, j] <- 1; cm["condD1", j] <- -1 }
  y <- matrix(rnorm(200 * nrow(X)), 200)
  w <- matrix(runif(200 * nrow(X), 0.5, 2), 200)
  same <- lmFit(y, X)               # identical stdev.unscaled rows: the fast path
  weighted <- lmFit(y, X, weights = w)  # per-gene rows (as after voom): limma's own loop
  a <- env$cpb_contrasts_fit(weighted, cm)
  b <- contrasts.fit(weighted, cm)
  rel <- max(abs(a$stdev.unscaled - b$stdev.unscaled) / b$stdev.unscaled)
  b$stdev.unscaled <- a$stdev.unscaled
  dense <- cm
  dense["plateP2", ] <- 0.5  # three non-zero weights: limma's own loop
  c(identical(env$cpb_contrasts_fit(same, cm), contrasts.fit(same, cm)),
    rel,
    identical(a, b),  # every other field is limma's own
    identical(env$cpb_contrasts_fit(weighted, dense), contrasts.fit(weighted, dense)))
}
"""


def test_identical_to_contrasts_fit():
    import rpy2.robjects as ro

    same, rel, rest, dense = list(ro.r(CHECK)(str(default_script_path())))
    assert same == 1 and rest == 1 and dense == 1
    assert 0 <= rel < 1e-13


TOPTABLE = """
function(script) {
  env <- new.env()
  sys.source(script, envir = env)
  suppressPackageStartupMessages({library(limma); library(edgeR)})
  set.seed(11)
  cond <- factor(c(rep(paste0("T", 1:8), each = 2), rep("D", 6)))
  plate <- factor(rep(c("P1", "P2"), length.out = length(cond)))
  X <- model.matrix(~0 + cond + plate)
  cm <- matrix(0, ncol(X), 8, dimnames = list(colnames(X), paste0("k", 1:8)))
  for (j in 1:8) { cm[j, j] <- 1; cm["condD", j] <- -1 }
  counts <- matrix(rnbinom(300 * nrow(X), mu = 50, size = 10), 300,
                   dimnames = list(paste0("g", 1:300), paste0("s", seq_len(nrow(X)))))
  rownames(X) <- colnames(counts)
  same <- TRUE
  for (normalized in c(TRUE, FALSE)) {
    x <- if (normalized) log2(counts + 1) else counts
    res <- env$cpb_limma_de(x, X, cm, normalized)
    # the reference: topTable itself, one call per contrast
    if (normalized) fit <- lmFit(x, X) else {
      dge <- DGEList(counts)
      dge <- calcNormFactors(dge[filterByExpr(dge, X), , keep.lib.sizes = FALSE])
      fit <- lmFit(voom(dge, X), X)
    }
    fit <- eBayes(contrasts.fit(fit, cm), robust = TRUE, trend = normalized)
    for (j in 1:8) {
      tab <- topTable(fit, coef = j, number = Inf, sort.by = "none", adjust.method = "BH", confint = TRUE)
      for (col in names(res$tables)) {
        a <- res$tables[[col]][rownames(tab), j]
        b <- tab[[col]]
        same <- same && isTRUE(all(abs(a - b) <= 1e-13 * pmax(1, abs(b))))
      }
    }
  }
  same
}
"""


def test_tables_equal_toptable_per_contrast():
    """limma_de.R builds every topTable column for all contrasts at once; each equals topTable's own."""
    import rpy2.robjects as ro

    assert bool(ro.r(TOPTABLE)(str(default_script_path()))[0])
