"""Settings of the compound registry: the offline reference, manual fallbacks, PubChem on or off.

The resolution itself is the harmonize stage's code
(:func:`cpb_assets.harmonize.compounds.resolve_compounds`); this resource only
says which tables and clients to use.
"""
from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REFERENCE = REPO_ROOT / "data" / "real" / "pubchem_sample" / "compounds.tsv"


class CompoundRegistryResource(dg.ConfigurableResource):
    """Resolves source compounds to PubChem CIDs.

    reference
        Offline reference table (TSV or SDF of PubChem compounds); default the
        100 real PubChem compounds shipped in ``data/real/pubchem_sample``.
    demo_synonyms
        Add the demo world's invented (SYNTHETIC) names and catalog IDs as
        synonyms of its real compounds, as PubChem's synonym table would.
    manual_table
        Optional TSV ``dataset, key, pubchem_cid`` of per-dataset manual
        fallbacks (``*`` as dataset applies everywhere).
    pubchem_online / pubchem_cache
        Ask PubChem PUG-REST after the offline reference (cached in the
        DuckDB file `pubchem_cache`); off by default, never in tests.
    """

    reference: str = ""
    demo_synonyms: bool = True
    manual_table: str = ""
    pubchem_online: bool = False
    pubchem_cache: str = ""

    def reference_path(self) -> Path:
        return Path(self.reference) if self.reference else DEFAULT_REFERENCE

    def manual(self) -> dict[str, dict[str, str]]:
        if not self.manual_table:
            return {}
        t = pd.read_csv(self.manual_table, sep="\t", dtype=str)
        out: dict[str, dict[str, str]] = {}
        for r in t.itertuples(index=False):
            out.setdefault(r.dataset, {})[r.key] = r.pubchem_cid
        return out

    def pubchem_client(self):
        """A PubChem client (cached), or None when online look-ups are off."""
        if not self.pubchem_online:
            return None
        from cpb_resources.pubchem import PubChemClient
        from cpb_resources.storage import default_home
        cache = self.pubchem_cache or str(default_home() / "pubchem_cache.duckdb")
        return PubChemClient(cache_path=cache, offline=False)
