"""A PubChem PUG-REST client with a DuckDB cache, and its Dagster resource.

The client speaks PUG-REST (``{base}/compound/<namespace>/<id>/<operation>/JSON``):

- :meth:`PubChemClient.cids_by_inchikey`: ``compound/inchikey/<key>/cids/JSON``
- :meth:`PubChemClient.cids_by_name`: ``compound/name/<name>/cids/JSON``
- :meth:`PubChemClient.properties`:
  ``compound/cid/<c1,c2,…>/property/CanonicalSMILES,IsomericSMILES,InChIKey,IUPACName/JSON``

Every answer is stored in the DuckDB table
``pubchem_cache(query_kind, query, response_json, fetched_at)`` and served from
there the next time, so a query goes over the network at most once.

Offline (``offline=True``, the default) the client never opens a connection:
it answers from the cache, and a cache miss raises :class:`OfflineError`
(rather than returning None, so "PubChem does not know it" — an empty list —
and "nobody asked PubChem yet" stay distinguishable). The compound registry
treats an :class:`OfflineError` as no answer.

Online, requests are spaced to at most ``max_requests_per_second`` (never more
than PubChem's limit of 5/s), time out after ``timeout_s``, and are retried
with exponential backoff on 503 (server busy), 429, 500, 502, 504 and
connection errors, honouring ``Retry-After``.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote

import dagster as dg
import duckdb
import pandas as pd
import requests

DEFAULT_BASE_URL = "https://pubchem.ncbi.nlm.nih.gov/rest/pug"
PUBCHEM_MAX_RPS = 5.0  # PubChem's published limit for programmatic access
PROPERTY_NAMES = ["CanonicalSMILES", "IsomericSMILES", "InChIKey", "IUPACName"]
# PubChem renamed two SMILES fields in its responses in 2025; accept both spellings
_PROPERTY_KEYS = {
    "canonical_smiles": ("CanonicalSMILES", "ConnectivitySMILES"),
    "isomeric_smiles": ("IsomericSMILES", "SMILES"),
    "inchikey": ("InChIKey",),
    "iupac_name": ("IUPACName",),
}
PROPERTY_COLUMNS = ["pubchem_cid", *_PROPERTY_KEYS]
_RETRY_STATUS = {429, 500, 502, 503, 504}
_BATCH = 100  # CIDs per property request: keeps URLs short

CACHE_DDL = """
CREATE TABLE IF NOT EXISTS pubchem_cache (
    query_kind VARCHAR NOT NULL,
    query VARCHAR NOT NULL,
    response_json VARCHAR NOT NULL,
    fetched_at TIMESTAMP NOT NULL,
    PRIMARY KEY (query_kind, query)
)
"""


class OfflineError(RuntimeError):
    """An offline client was asked something its cache does not hold."""


class PubChemError(RuntimeError):
    """PubChem answered with an error, or did not answer after all retries."""


class PubChemClient:
    """PUG-REST client with a DuckDB cache.

    Parameters
    ----------
    cache_path
        DuckDB file holding the ``pubchem_cache`` table (created when online).
    base_url
        PUG-REST root, default :data:`DEFAULT_BASE_URL`.
    offline
        True (default): answer from the cache only, never touch the network.
    max_requests_per_second
        Request rate ceiling; values above 5 are capped at 5.
    timeout_s
        Connect and read timeout of one request.
    max_retries
        Retries after the first attempt on a retryable status or connection error.
    backoff_s
        First backoff; doubles with every retry.
    negative_ttl_days
        A "no such compound" answer (404 or no CID) is trusted for this many
        days; after that an online client asks again (PubChem grows). Positive
        answers do not expire. Offline, every cached answer is used.

    Attributes
    ----------
    n_requests
        HTTP requests sent by this client (retries included).
    """

    def __init__(self, cache_path: str | Path, base_url: str = DEFAULT_BASE_URL, offline: bool = True,
                 max_requests_per_second: float = PUBCHEM_MAX_RPS, timeout_s: float = 30.0,
                 max_retries: int = 4, backoff_s: float = 1.0, negative_ttl_days: float = 30.0):
        if max_requests_per_second <= 0:
            raise ValueError("max_requests_per_second must be positive")
        self.cache_path = Path(cache_path)
        self.base_url = base_url.rstrip("/")
        self.offline = offline
        self.min_interval = 1.0 / min(float(max_requests_per_second), PUBCHEM_MAX_RPS)
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.negative_ttl = timedelta(days=negative_ttl_days)
        self.n_requests = 0
        self._last = float("-inf")
        self._lock = threading.Lock()
        self._session: requests.Session | None = None

    # -- cache ---------------------------------------------------------------------------
    def _connect(self, read_only: bool, attempts: int = 300):
        """Open the cache; another run holding it (DuckDB allows one writer) is waited for, 0.1 s a try."""
        for attempt in range(attempts):
            try:
                return duckdb.connect(str(self.cache_path), read_only=read_only)
            except duckdb.IOException:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.1)

    def _cache_get(self, kind: str, queries: list[str]) -> dict[str, object]:
        if not queries or not self.cache_path.exists():
            return {}
        with self._connect(read_only=self.offline) as con:
            exists = con.execute("SELECT count(*) FROM information_schema.tables "
                                 "WHERE table_name = 'pubchem_cache'").fetchone()[0]
            if not exists:
                return {}
            rows = con.execute(
                "SELECT query, response_json, fetched_at FROM pubchem_cache "
                "WHERE query_kind = ? AND list_contains(?, query)", [kind, queries]).fetchall()
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        out = {}
        for q, r, fetched in rows:
            answer = json.loads(r)
            if not self.offline and answer in ([], None, {}) and now - fetched > self.negative_ttl:
                continue  # an old "not found": ask again
            out[q] = answer
        return out

    def _cache_put(self, kind: str, answers: dict[str, object]) -> None:
        if not answers:
            return
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        with self._connect(read_only=False) as con:
            con.execute(CACHE_DDL)
            con.executemany("INSERT OR REPLACE INTO pubchem_cache VALUES (?, ?, ?, ?)",
                            [(kind, q, json.dumps(a), now) for q, a in answers.items()])

    # -- HTTP ----------------------------------------------------------------------------
    def _get(self, path: str) -> requests.Response | None:
        """GET ``base_url/path``; None for 404 (PUGREST.NotFound), raises on other errors."""
        if self.offline:  # defensive: callers check first
            raise OfflineError(f"offline: refusing to request {path}")
        if self._session is None:
            self._session = requests.Session()
            self._session.headers["User-Agent"] = "chem-perturbridge (PubChem PUG-REST client)"
        url = f"{self.base_url}/{path}"
        for attempt in range(self.max_retries + 1):
            with self._lock:  # space requests out, across threads too
                wait = self._last + self.min_interval - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                self._last = time.monotonic()
                self.n_requests += 1
            delay = self.backoff_s * 2 ** attempt
            try:
                resp = self._session.get(url, timeout=self.timeout_s)
            except (requests.ConnectionError, requests.Timeout) as exc:
                if attempt == self.max_retries:
                    raise PubChemError(f"{url}: no answer after {attempt + 1} attempts: {exc}") from exc
                time.sleep(delay)
                continue
            if resp.status_code == 200:
                return resp
            if resp.status_code == 404:
                return None
            if resp.status_code in _RETRY_STATUS and attempt < self.max_retries:
                retry_after = resp.headers.get("Retry-After", "")
                if retry_after.isdigit():
                    delay = max(delay, min(float(retry_after), 60.0))
                time.sleep(delay)
                continue
            raise PubChemError(f"{url}: HTTP {resp.status_code}: {resp.text[:200]}")
        raise PubChemError(f"{url}: gave up")  # not reached

    def _cids(self, kind: str, namespace: str, query: str) -> list[str]:
        cached = self._cache_get(kind, [query])
        if query in cached:
            return [str(c) for c in cached[query]]
        if self.offline:
            raise OfflineError(f"PubChem {kind} '{query}' is not in the cache {self.cache_path} and the "
                               "client is offline")
        resp = self._get(f"compound/{namespace}/{quote(query, safe='')}/cids/JSON")
        cids: list[int] = []
        if resp is not None:
            payload = resp.json()
            try:
                cids = [int(c) for c in payload["IdentifierList"]["CID"] if int(c) > 0]  # 0: no match
            except (KeyError, TypeError, ValueError) as exc:
                raise PubChemError(f"unexpected PubChem answer for {kind} '{query}': {payload!r:.200}") from exc
        self._cache_put(kind, {query: cids})
        return [str(c) for c in cids]

    # -- public --------------------------------------------------------------------------
    def cids_by_inchikey(self, inchikey: str) -> list[str]:
        """CIDs whose standard InChIKey is ``inchikey`` (best first; [] if none).

        Raises
        ------
        OfflineError
            Offline and not cached.
        PubChemError
            PubChem failed after retries.
        """
        return self._cids("cids_by_inchikey", "inchikey", inchikey.strip().upper())

    def cids_by_name(self, name: str) -> list[str]:
        """CIDs with this name or synonym (PubChem's best match first; [] if none).

        The cache key is the name stripped of surrounding whitespace; PubChem's
        name search is itself case-insensitive.
        """
        return self._cids("cids_by_name", "name", name.strip())

    def properties(self, cids: Iterable) -> pd.DataFrame:
        """Canonical and isomeric SMILES, InChIKey and IUPAC name of CIDs.

        Parameters
        ----------
        cids
            PubChem CIDs (int or str).

        Returns
        -------
        pandas.DataFrame
            Columns ``pubchem_cid`` (str), ``canonical_smiles``,
            ``isomeric_smiles``, ``inchikey``, ``iupac_name``; one row per
            distinct CID PubChem knows, in input order (unknown CIDs are left
            out, and remembered as unknown in the cache).

        Raises
        ------
        OfflineError
            Offline and some CID is not cached (the message lists them).
        """
        wanted = list(dict.fromkeys(str(int(c)) for c in cids))
        cached = self._cache_get("properties", wanted)
        missing = [c for c in wanted if c not in cached]
        if missing and self.offline:
            raise OfflineError(f"properties of CIDs {missing[:10]} are not in the cache {self.cache_path} "
                               "and the client is offline")
        for start in range(0, len(missing), _BATCH):
            batch = missing[start:start + _BATCH]
            resp = self._get(f"compound/cid/{','.join(batch)}/property/{','.join(PROPERTY_NAMES)}/JSON")
            found: dict[str, object] = {c: None for c in batch}  # None: PubChem does not know it
            if resp is not None:
                payload = resp.json()
                try:
                    for rec in payload["PropertyTable"]["Properties"]:
                        found[str(rec["CID"])] = rec
                except (KeyError, TypeError) as exc:
                    raise PubChemError(f"unexpected PubChem property answer: {payload!r:.200}") from exc
            self._cache_put("properties", found)
            cached.update(found)
        rows = []
        for c in wanted:
            rec = cached.get(c)
            if not rec:
                continue
            row = {"pubchem_cid": c}
            for col, keys in _PROPERTY_KEYS.items():
                row[col] = next((rec[k] for k in keys if k in rec), None)
            rows.append(row)
        return pd.DataFrame(rows, columns=PROPERTY_COLUMNS)

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


class PubChemResource(dg.ConfigurableResource):
    """Dagster resource handing out a :class:`PubChemClient`.

    Offline by default, so a run never touches the network unless a run
    config sets ``offline: false``. ``cache_path`` empty means
    ``$CPB_HOME/pubchem_cache.duckdb``.
    """

    cache_path: str = ""
    base_url: str = DEFAULT_BASE_URL
    offline: bool = True
    max_requests_per_second: float = PUBCHEM_MAX_RPS
    timeout_s: float = 30.0
    max_retries: int = 4
    backoff_s: float = 1.0

    def get_client(self) -> PubChemClient:
        if self.cache_path:
            path = Path(self.cache_path)
        else:
            from cpb_resources.storage import default_home  # imported late: it pulls in anndata

            path = default_home() / "pubchem_cache.duckdb"
        return PubChemClient(path, base_url=self.base_url, offline=self.offline,
                             max_requests_per_second=self.max_requests_per_second,
                             timeout_s=self.timeout_s, max_retries=self.max_retries,
                             backoff_s=self.backoff_s)
