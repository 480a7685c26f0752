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

# limma's contrasts.fit, without its per-gene loop.
#
# For a non-orthogonal design (a plate term) contrasts.fit loops over genes,
# multiplying a Cholesky factor of the coefficient correlation matrix into
# the contrast matrix for every gene: minutes for a few hundred contrasts.
# Two exact shortcuts, tried in order:
# 1. Without weights (the normalized L1000 route) every gene has the same
#    stdev.unscaled row: limma's own function runs on the distinct rows only
#    and the result is copied to the genes sharing them (bit-identical; rows
#    are compared exactly, as hex floats).
# 2. With weights (voom), when every contrast has at most two non-zero
#    weights (treated - control, as in this project), limma's loop computes
#    U[g, j]^2 = c_j' D_g C D_g c_j with D_g = diag(stdev.unscaled[g, ]) and
#    C the correlation matrix; with two non-zeros that is
#    (a s_a)^2 C_aa + (b s_b)^2 C_bb + 2 a b s_a s_b C_ab, vectorised over
#    genes (equal to limma's loop to rounding, ~1e-15 relative).
# Anything else (NA coefficients, orthogonal designs, denser contrasts) is
# limma's contrasts.fit itself.
cpb_contrasts_fit <- function(fit, contrasts) {
  su <- fit$stdev.unscaled
  if (anyNA(fit$coefficients) || nrow(su) < 2L || is.null(fit$cov.coefficients))
    return(contrasts.fit(fit, contrasts))
  cormatrix <- cov2cor(fit$cov.coefficients)
  if (all(abs(cormatrix[lower.tri(cormatrix)]) < 1e-14))
    return(contrasts.fit(fit, contrasts))  # orthogonal: limma's own closed form
  key <- apply(su, 1L, function(r) paste(sprintf("%a", r), collapse = ","))
  grp <- match(key, unique(key))
  if (max(grp) < nrow(su)) {
    reps <- which(!duplicated(grp))
    distinct <- fit
    distinct$stdev.unscaled <- su[reps, , drop = FALSE]
    out <- contrasts.fit(distinct, contrasts)
    u <- out$stdev.unscaled[grp, , drop = FALSE]
    rownames(u) <- rownames(su)
    out$stdev.unscaled <- u
    return(out)
  }
  if (any(colSums(contrasts != 0) > 2L)) return(contrasts.fit(fit, contrasts))
  one <- fit
  one$stdev.unscaled <- su[1L, , drop = FALSE]  # limma computes every other field
  out <- contrasts.fit(one, contrasts)
  u <- matrix(0, nrow(su), ncol(contrasts), dimnames = list(rownames(su), colnames(contrasts)))
  for (j in seq_len(ncol(contrasts))) {
    idx <- which(contrasts[, j] != 0)
    v <- su[, idx, drop = FALSE] * rep(contrasts[idx, j], each = nrow(su))
    q <- v[, 1L]^2 * cormatrix[idx[1L], idx[1L]]
    if (length(idx) == 2L)
      q <- q + v[, 2L]^2 * cormatrix[idx[2L], idx[2L]] + 2 * v[, 1L] * v[, 2L] * cormatrix[idx[1L], idx[2L]]
    u[, j] <- sqrt(q)
  }
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
    # topTable(fit2, coef = j, number = Inf, sort.by = "none", adjust.method = "BH",
    # confint = TRUE) for every j at once: the same expressions as limma's
    # .topTableT, in the same order (bit-identical), without a call per contrast
    # (a few ms each: minutes for the thousands of contrasts of a batch)
    P <- fit2$p.value
    adj <- P
    for (j in seq_len(ncol(P))) adj[, j] <- p.adjust(P[, j], method = "BH")
    margin <- sqrt(fit2$s2.post) * fit2$stdev.unscaled * qt(0.975, df = fit2$df.total)
    M <- fit2$coefficients
    A <- matrix(fit2$Amean, nrow(M), ncol(M), dimnames = dimnames(M))
    out <- list(logFC = M, AveExpr = A, t = fit2$t, P.Value = P, adj.P.Val = adj, B = fit2$lods,
                CI.L = M - margin, CI.R = M + margin)
    out <- lapply(out, function(m) {
      m <- as.matrix(m)[genes, colnames(contrasts), drop = FALSE]
      dimnames(m) <- list(genes, colnames(contrasts))
      m
    })
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
