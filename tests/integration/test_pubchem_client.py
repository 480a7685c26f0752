"""The PubChem PUG-REST client against a local PUG-REST-shaped server.

The server (http.server on 127.0.0.1, a free port) answers from the real
PubChem sample (data/real/pubchem_sample/compounds.tsv) with InChIKeys
computed by RDKit, counts every request and can answer 503 on demand.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import duckdb
import pandas as pd
import pytest
from rdkit import Chem

from cpb_assets.harmonize.compounds import CompoundReference, resolve_compounds
from cpb_resources.pubchem import OfflineError, PubChemClient, PubChemError, PubChemResource

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "real" / "pubchem_sample" / "compounds.tsv"
KEY_650010 = "VUWFMNIAVRCQHW-UHFFFAOYSA-N"  # RDKit's and PubChem's InChIKey of CID 650010
SYNONYM = "Test compound 2/β"


class PugRestStub(ThreadingHTTPServer):
    def __init__(self, table: pd.DataFrame):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.table = table.set_index("pubchem_cid")
        self.by_key = {k: c for c, k in zip(table["pubchem_cid"], table["inchikey"])}
        self.by_name = {n.lower(): c for c, n in zip(table["pubchem_cid"], table["iupac_name"]) if n}
        self.by_name[SYNONYM.lower()] = "650002"  # a synonym with a space, a slash and a non-ASCII letter
        self.paths: list[str] = []
        self.fail_next = 0  # answer 503 to this many coming requests
        self.modern_keys = False  # 2025 response spelling: SMILES / ConnectivitySMILES
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/rest/pug"


class _Handler(BaseHTTPRequestHandler):
    server: PugRestStub

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, status: int, payload: dict, headers: dict | None = None):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        srv = self.server
        with srv.lock:
            srv.paths.append(self.path)
            busy = srv.fail_next > 0
            srv.fail_next -= busy
        if busy:
            return self._send(503, {"Fault": {"Code": "PUGREST.ServerBusy", "Message": "Too many requests"}},
                              {"Retry-After": "0"})
        parts = self.path.split("/")
        # /rest/pug/compound/<namespace>/<id>/<operation...>/JSON
        if parts[:4] != ["", "rest", "pug", "compound"] or parts[-1] != "JSON":
            return self._send(400, {"Fault": {"Code": "PUGREST.BadRequest"}})
        namespace, ident, op = parts[4], unquote(parts[5]), parts[6]
        not_found = (404, {"Fault": {"Code": "PUGREST.NotFound", "Message": "No CID found"}})
        if op == "cids":
            cid = srv.by_key.get(ident) if namespace == "inchikey" else srv.by_name.get(ident.lower())
            if cid is None:
                return self._send(*not_found)
            return self._send(200, {"IdentifierList": {"CID": [int(cid)]}})
        if op == "property" and namespace == "cid":
            props = []
            for c in ident.split(","):
                if c in srv.table.index:
                    row = srv.table.loc[c]
                    smi_keys = ("ConnectivitySMILES", "SMILES") if srv.modern_keys else (
                        "CanonicalSMILES", "IsomericSMILES")
                    props.append({"CID": int(c), smi_keys[0]: row["canonical_smiles"],
                                  smi_keys[1]: row["isomeric_smiles"], "InChIKey": row["inchikey"],
                                  "IUPACName": row["iupac_name"]})
            if not props:
                return self._send(*not_found)
            return self._send(200, {"PropertyTable": {"Properties": props}})
        return self._send(400, {"Fault": {"Code": "PUGREST.BadRequest"}})


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    t = pd.read_csv(SAMPLE, sep="\t", dtype=str, keep_default_na=False)
    t["inchikey"] = [Chem.MolToInchiKey(Chem.MolFromSmiles(s)) for s in t["isomeric_smiles"]]
    return t


@pytest.fixture()
def server(table):
    srv = PugRestStub(table)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def client(server, tmp_path, **kw) -> PubChemClient:
    kw.setdefault("offline", False)
    kw.setdefault("backoff_s", 0.01)
    return PubChemClient(tmp_path / "cache.duckdb", base_url=server.url, **kw)


def test_cids_by_inchikey_url_parsing_and_cache(server, tmp_path):
    c = client(server, tmp_path)
    assert c.cids_by_inchikey(KEY_650010.lower()) == ["650010"]
    assert server.paths == [f"/rest/pug/compound/inchikey/{KEY_650010}/cids/JSON"]
    assert c.cids_by_inchikey(KEY_650010) == ["650010"]
    assert len(server.paths) == 1  # second call from the cache
    # a fresh client on the same file, online or offline, asks nothing either
    assert client(server, tmp_path).cids_by_inchikey(KEY_650010) == ["650010"]
    assert client(server, tmp_path, offline=True).cids_by_inchikey(KEY_650010) == ["650010"]
    assert len(server.paths) == 1
    with duckdb.connect(str(tmp_path / "cache.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT query_kind, query, response_json, fetched_at FROM pubchem_cache").fetchall()
    assert [r[:3] for r in rows] == [("cids_by_inchikey", KEY_650010, "[650010]")]
    assert rows[0][3] is not None


def test_cids_by_name_is_url_encoded(server, tmp_path, table):
    c = client(server, tmp_path)
    assert c.cids_by_name(f"  {SYNONYM.upper()} ") == ["650002"]
    (path,) = server.paths
    assert path == "/rest/pug/compound/name/TEST%20COMPOUND%202%2F%CE%92/cids/JSON"
    iupac = table.loc[table["pubchem_cid"] == "650001", "iupac_name"].item()
    assert c.cids_by_name(iupac) == ["650001"]  # brackets, primes and commas survive the trip


def test_not_found_is_an_empty_list_and_is_cached(server, tmp_path):
    c = client(server, tmp_path)
    assert c.cids_by_name("no such compound") == []
    assert c.cids_by_name("no such compound") == []
    assert len(server.paths) == 1


def test_not_found_expires_but_a_found_answer_does_not(server, tmp_path):
    c = client(server, tmp_path, negative_ttl_days=30)
    assert c.cids_by_name("no such compound") == []
    assert c.cids_by_inchikey(KEY_650010) == ["650010"]
    with duckdb.connect(str(tmp_path / "cache.duckdb")) as con:  # both answers are now 31 days old
        con.execute("UPDATE pubchem_cache SET fetched_at = fetched_at - INTERVAL 31 DAY")
    assert c.cids_by_inchikey(KEY_650010) == ["650010"]
    assert len(server.paths) == 2  # the positive answer came from the cache
    assert c.cids_by_name("no such compound") == []
    assert len(server.paths) == 3  # the stale negative one was asked again


def test_two_runs_share_the_cache_without_crashing(server, tmp_path):
    """A second run opening the cache while the first holds it waits instead of failing."""
    import subprocess
    import sys

    # another run's process holds the file (DuckDB: one writing process at a time) for 2 s
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
                               "print('held', flush=True); time.sleep(2); c.close()", str(tmp_path / "cache.duckdb")],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    t0 = time.monotonic()
    assert client(server, tmp_path).cids_by_inchikey(KEY_650010) == ["650010"]
    holder.wait(timeout=30)
    assert time.monotonic() - t0 > 0.5  # it waited for the other run instead of crashing


@pytest.mark.parametrize("modern", [False, True])
def test_properties_batch_parse_and_cache(server, tmp_path, table, modern):
    server.modern_keys = modern
    c = client(server, tmp_path)
    got = c.properties([650010, "650002", 999])
    assert server.paths == ["/rest/pug/compound/cid/650010,650002,999/property/"
                            "CanonicalSMILES,IsomericSMILES,InChIKey,IUPACName/JSON"]
    assert got["pubchem_cid"].tolist() == ["650010", "650002"]
    ref = table.set_index("pubchem_cid").loc[["650010", "650002"]]
    assert got["isomeric_smiles"].tolist() == ref["isomeric_smiles"].tolist()
    assert got["canonical_smiles"].tolist() == ref["canonical_smiles"].tolist()
    assert got["inchikey"].tolist() == [KEY_650010, ref.loc["650002", "inchikey"]]
    assert got["iupac_name"].tolist() == ref["iupac_name"].tolist()
    # cached, the unknown CID included; a new CID alone is fetched alone
    again = c.properties(["650002", "999", "650010"])
    assert again["pubchem_cid"].tolist() == ["650002", "650010"]
    assert len(server.paths) == 1
    c.properties(["650010", "650003"])
    assert server.paths[-1].startswith("/rest/pug/compound/cid/650003/property/")


def test_503_is_retried_with_backoff(server, tmp_path):
    server.fail_next = 2
    c = client(server, tmp_path)
    assert c.cids_by_inchikey(KEY_650010) == ["650010"]
    assert len(server.paths) == 3 and c.n_requests == 3


def test_persistent_503_gives_up_with_a_clear_error(server, tmp_path):
    server.fail_next = 10
    c = client(server, tmp_path, max_retries=2)
    with pytest.raises(PubChemError, match="HTTP 503"):
        c.cids_by_inchikey(KEY_650010)
    assert len(server.paths) == 3
    assert not (tmp_path / "cache.duckdb").exists()  # failures are not cached


def test_offline_never_requests(server, tmp_path):
    c = client(server, tmp_path, offline=True)
    with pytest.raises(OfflineError, match="not in the cache"):
        c.cids_by_inchikey(KEY_650010)
    with pytest.raises(OfflineError):
        c.cids_by_name("anything")
    with pytest.raises(OfflineError, match="650010"):
        c.properties([650010])
    assert server.paths == [] and c.n_requests == 0
    assert not (tmp_path / "cache.duckdb").exists()


def test_rate_is_capped_at_five_per_second(server, tmp_path, table):
    c = client(server, tmp_path, max_requests_per_second=1000)  # asks for more than PubChem allows
    keys = table["inchikey"].iloc[:4].tolist()
    start = time.monotonic()
    for k in keys:
        c.cids_by_inchikey(k)
    elapsed = time.monotonic() - start
    assert len(server.paths) == 4
    assert elapsed >= 3 * 0.2 - 0.01  # three gaps of at least 1/5 s


def test_resource_defaults_offline_and_builds_a_client(server, tmp_path):
    res = PubChemResource(cache_path=str(tmp_path / "c.duckdb"), base_url=server.url)
    c = res.get_client()
    assert c.offline is True and c.base_url == server.url and c.min_interval == pytest.approx(0.2)
    with pytest.raises(OfflineError):
        c.cids_by_inchikey(KEY_650010)
    assert server.paths == []


def test_registry_uses_the_client_after_the_local_reference(server, tmp_path, table):
    empty = CompoundReference([])
    smiles = table.loc[table["pubchem_cid"] == "650010", "isomeric_smiles"].item()
    name = table.loc[table["pubchem_cid"] == "650002", "iupac_name"].item()
    records = pd.DataFrame({"dataset": "d", "smiles": [smiles + ".Cl", None, None],
                            "name": [None, name, "unknown thing"]})
    out = resolve_compounds(records, empty, pubchem=client(server, tmp_path),
                            manual={"d": {"unknown thing": 5}})
    assert out["pubchem_cid"].tolist() == ["650010", "650002", "5"]
    assert out["cid_method"].tolist() == ["pubchem_inchikey", "pubchem_name", "manual"]
    n = len(server.paths)
    # offline on a cold cache: no answer, no request, records kept as unresolved
    cold = PubChemClient(tmp_path / "cold.duckdb", base_url=server.url, offline=True)
    out = resolve_compounds(records, empty, pubchem=cold)
    assert out["cid_method"].tolist() == ["unresolved"] * 3
    assert len(server.paths) == n
