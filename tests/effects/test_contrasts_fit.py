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
