"""The compound registry's reference: which structures and names map to which CID."""
from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd

from cpb_assets.harmonize.compounds import CompoundReference, resolve_compounds
from cpb_assets.sources.demo_world import REAL_DATA

DEFAULT_REFERENCE = REAL_DATA / "pubchem_sample" / "compounds.tsv"


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

    def build_reference(self, seed: int | None = None) -> CompoundReference:
        ref = CompoundReference.from_pubchem_sample(Path(self.reference) if self.reference else DEFAULT_REFERENCE)
        if self.demo_synonyms:
            from cpb_assets.sources.demo_world import WORLD_SEED, build_world
            comp = build_world(seed or WORLD_SEED).compounds
            for r in comp.itertuples():
                ref.add_names(r.pubchem_cid, [r.name])
                ref.add_catalog_ids(r.pubchem_cid, [r.brd_id, r.catalog_id])
        return ref

    def manual(self) -> dict[str, dict[str, str]]:
        if not self.manual_table:
            return {}
        t = pd.read_csv(self.manual_table, sep="\t", dtype=str)
        out: dict[str, dict[str, str]] = {}
        for r in t.itertuples(index=False):
            out.setdefault(r.dataset, {})[r.key] = r.pubchem_cid
        return out

    def resolve(self, records: pd.DataFrame, seed: int | None = None) -> pd.DataFrame:
        client = None
        if self.pubchem_online:
            from cpb_resources.pubchem import PubChemClient
            from cpb_resources.storage import default_home
            cache = self.pubchem_cache or str(default_home() / "pubchem_cache.duckdb")
            client = PubChemClient(cache_path=cache, offline=False)
        return resolve_compounds(records, self.build_reference(seed), manual=self.manual(), pubchem=client)
