"""Large Perturbation Model stage (METHODS §5): training tables, splits, fingerprints, models.

Pure modules: :mod:`.tables` (rows, shards, streaming readers, vocabularies),
:mod:`.splits` (scalar, molecule-holdout and scaffold splits), :mod:`.prepare`
(the ``lpm_split`` product and its leakage checks), :mod:`.fingerprints`
(Morgan bits). Dagster assets live in :mod:`.assets` only.
"""
