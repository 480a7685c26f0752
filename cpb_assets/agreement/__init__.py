"""Cross-dataset and replicate agreement of DE signatures (METHODS §4, paper §5 and Appendix C).

Pure modules (no Dagster): ``matching`` (two-stage MNN condition matching), ``metrics`` (the metric
registry), ``baselines`` (same-context different-compound centroids), ``strength`` (perturbation
strength inputs), ``report`` (figures and tables); ``workloads`` runs on the compute resource.
``assets`` holds the Dagster assets of the stage.
"""
