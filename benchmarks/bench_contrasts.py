"""limma's contrasts.fit vs the DE layer's cpb_contrasts_fit on a design with a plate term.

Input (SYNTHETIC, seeded in R): 978 genes, one L1000-like stratum with
``n`` treated wells (one condition each, as in the ``sep`` labeling) plus 48
DMSO wells on 6 plates, design ``~0 + cond + plate`` (not orthogonal), ``n``
contrasts treated − DMSO, no weights (the normalized route). limma's
contrasts.fit loops over genes for such designs; cpb_contrasts_fit
(``r_scripts/limma_de.R``) runs it on the distinct stdev.unscaled rows only.
Check: the two fits are ``identical()`` in R (bit for bit).
"""
from __future__ import annotations

from benchmarks import REPS, median_times, row
from cpb_resources.limma import default_script_path, r_objects

SETUP = """
function(script, n) {
  env <- new.env()
  sys.source(script, envir = env)
  suppressPackageStartupMessages(library(limma))
  set.seed(11)
  cond <- factor(c(paste0("T", seq_len(n)), rep("DMSO", 48)))
  plate <- factor(sample(paste0("P", 1:6), length(cond), TRUE))
  X <- model.matrix(~0 + cond + plate)
  cm <- matrix(0, ncol(X), n, dimnames = list(colnames(X), NULL))
  for (j in seq_len(n)) { cm[paste0("condT", j), j] <- 1; cm["condDMSO", j] <- -1 }
  fit <- lmFit(matrix(rnorm(978 * length(cond)), 978), X)
  list(limma = function() contrasts.fit(fit, cm), project = function() env$cpb_contrasts_fit(fit, cm))
}
"""


def run(quick: bool = False, reps: int = REPS) -> list[dict]:
    ro = r_objects()
    n = 60 if quick else 200
    fns = ro.r(SETUP)(str(default_script_path()), n)
    limma_fn, project_fn = fns.rx2("limma"), fns.rx2("project")
    med, times, last = median_times({"cpb_contrasts_fit": lambda: project_fn(),
                                     "contrasts.fit": lambda: limma_fn()}, reps)
    same = bool(ro.r["identical"](last["cpb_contrasts_fit"], last["contrasts.fit"])[0])
    return [row("contrasts_fit", "cpb_contrasts_fit vs limma contrasts.fit (plate term, no weights)",
                f"978 genes × {n + 48} samples, {n} contrasts, 6 plates", project="cpb_contrasts_fit",
                project_s=med["cpb_contrasts_fit"], baseline="limma::contrasts.fit",
                baseline_s=med["contrasts.fit"], check="identical() in R" if same else "NOT IDENTICAL",
                reps=reps, times=times, ok=same)]
