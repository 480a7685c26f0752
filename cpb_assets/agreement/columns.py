"""Column lists of the agreement score tables (`agreement_pairs`, `agreement_strength`).

A module of its own so that the Dagster definitions, which write empty partitions with these columns, do not
import the scoring code (metrics, baselines, scipy) that only the compute workloads need.
"""

SCORE_COLUMNS = ["dataset_a", "dataset_b", "contrast_a", "contrast_b", "stratum_a", "stratum_b", "cell_type",
                 "time_h", "pubchem_cid", "dose_a", "dose_b", "metric", "variant", "observed", "baseline",
                 "baseline_a", "baseline_b", "adjusted", "n_genes"]
STRENGTH_COLUMNS = ["dataset_a", "dataset_b", "contrast_a", "contrast_b", "cell_type", "time_h", "pubchem_cid",
                    "dose_a", "dose_b", "n_genes", "mean_abs_t_a", "mean_abs_t_b", "mean_abs_t", "spearman_logfc",
                    "spearman_t"]
