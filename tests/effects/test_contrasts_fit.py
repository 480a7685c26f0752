"""r_scripts/limma_de.R's cpb_contrasts_fit is bit-identical to limma's contrasts.fit."""
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
  c(identical(env$cpb_contrasts_fit(same, cm), contrasts.fit(same, cm)),
    identical(env$cpb_contrasts_fit(weighted, cm), contrasts.fit(weighted, cm)))
}
"""


def test_identical_to_contrasts_fit():
    import rpy2.robjects as ro

    out = list(ro.r(CHECK)(str(default_script_path())))
    assert out == [True, True]
