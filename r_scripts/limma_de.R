# Chem-PerturBridge differential expression, one stratum (METHODS §3).
#
# Sourced by cpb_resources/limma.py into its own environment. Every input
# arrives as an R object built by Python: sample, gene, coefficient and
# contrast names are safe generated tokens (s00001, g000001, c0001, plate02,
# k0001); the real labels never reach R. Nothing here parses or pastes text
# from a dataset.

suppressPackageStartupMessages({
  library(limma)
  library(edgeR)
  library(statmod)  # eBayes(robust = TRUE) needs it
})

# limma's contrasts.fit, computed once per distinct row of stdev.unscaled.
#
# For a non-orthogonal design (a plate term) contrasts.fit loops over genes,
# multiplying a coefficients x coefficients Cholesky factor into the contrast
# matrix for every gene: minutes for a few hundred contrasts. Without
# weights (the normalized L1000 route) every gene has the same
# stdev.unscaled row, so limma's own function is run on the distinct rows
# only and its result copied to the genes sharing them: bit-identical to
# contrasts.fit on the whole fit (rows are compared exactly, as hex floats).
cpb_contrasts_fit <- function(fit, contrasts) {
  su <- fit$stdev.unscaled
  key <- apply(su, 1L, function(r) paste(sprintf("%a", r), collapse = ","))
  grp <- match(key, unique(key))
  if (anyNA(fit$coefficients) || max(grp) == nrow(su)) return(contrasts.fit(fit, contrasts))
  reps <- which(!duplicated(grp))
  distinct <- fit
  distinct$stdev.unscaled <- su[reps, , drop = FALSE]
  out <- contrasts.fit(distinct, contrasts)
  u <- out$stdev.unscaled[grp, , drop = FALSE]
  rownames(u) <- rownames(su)
  out$stdev.unscaled <- u
  out
}

# Fit one stratum and return per-contrast topTable columns as genes x contrasts
# matrices plus per-gene moderated-variance terms and fit diagnostics.
#
# x          numeric matrix, genes x samples (counts for the count route,
#            normalized log values for the normalized route)
# design     numeric matrix, samples x coefficients, rownames = colnames(x)
# contrasts  numeric matrix, coefficients x contrasts, rownames = colnames(design)
# normalized TRUE: L1000 route (lmFit on the values, eBayes trend = TRUE);
#            FALSE: count route (filterByExpr, TMM, voom; trend = FALSE)
cpb_limma_de <- function(x, design, contrasts, normalized) {
  if (!identical(colnames(x), rownames(design)))
    stop("sample names of the expression matrix and the design differ")
  if (!identical(colnames(design), rownames(contrasts)))
    stop("coefficient names of the design and the contrast matrix differ")
  warns <- character(0)
  collect <- function(w) {
    warns <<- c(warns, conditionMessage(w))
    invokeRestart("muffleWarning")
  }
  withCallingHandlers({
    if (isTRUE(normalized)) {
      fit <- lmFit(x, design)
      genes_kept <- nrow(x)
    } else {
      dge <- DGEList(counts = x)
      keep <- filterByExpr(dge, design)
      genes_kept <- sum(keep)
      # too few expressed genes is a property of the data, not a failure:
      # report it so the caller records the stratum as skipped
      if (genes_kept < 2L)
        return(list(nothing_to_fit = sprintf("filterByExpr kept %d genes", genes_kept),
                    genes_kept = as.integer(genes_kept), n_samples = as.integer(ncol(x))))
      dge <- dge[keep, , keep.lib.sizes = FALSE]
      dge <- calcNormFactors(dge)
      v <- voom(dge, design)
      fit <- lmFit(v, design)
    }
    fit2 <- cpb_contrasts_fit(fit, contrasts)
    fit2 <- eBayes(fit2, robust = TRUE, trend = isTRUE(normalized))
    genes <- rownames(fit2)
    cols <- c("logFC", "AveExpr", "t", "P.Value", "adj.P.Val", "B", "CI.L", "CI.R")
    tabs <- lapply(seq_len(ncol(contrasts)), function(j) {
      tab <- topTable(fit2, coef = j, number = Inf, sort.by = "none",
                      adjust.method = "BH", confint = TRUE)
      # join by gene name, never by position
      idx <- match(genes, rownames(tab))
      if (anyNA(idx)) stop("topTable lost genes of the fit")
      tab[idx, cols, drop = FALSE]
    })
    # one genes x contrasts matrix per topTable column, built once (no copy per contrast)
    out <- lapply(cols, function(cl) {
      m <- matrix(unlist(lapply(tabs, `[[`, cl), use.names = FALSE),
                  nrow = length(genes), ncol = ncol(contrasts))
      dimnames(m) <- list(genes, colnames(contrasts))
      m
    })
    names(out) <- cols
  }, warning = collect)
  list(
    nothing_to_fit = "",
    tables = out,
    genes = genes,
    contrasts = colnames(contrasts),
    sigma = as.numeric(fit2$sigma),
    stdev_unscaled = fit2$stdev.unscaled[genes, colnames(contrasts), drop = FALSE],
    s2_post = as.numeric(fit2$s2.post),
    df_total = as.numeric(fit2$df.total),
    df_prior = as.numeric(fit2$df.prior),
    s2_prior = as.numeric(fit2$s2.prior),
    df_residual = as.numeric(fit2$df.residual),
    genes_kept = as.integer(genes_kept),
    n_samples = as.integer(ncol(x)),
    warnings = unique(warns)
  )
}
