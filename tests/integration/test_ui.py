"""`make ui`: dagster dev on 127.0.0.1 serves the asset graph with the L1000 partitions
materialized; checked through GraphQL and in a real headless Chromium."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.ui
REPO = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())["data"]


@pytest.fixture(scope="module")
def ui(l1000_home):
    port = _free_port()
    env = {**os.environ, "CPB_HOME": str(l1000_home), "DAGSTER_HOME": str(l1000_home / "dagster")}
    dagster = Path(sys.executable).with_name("dagster")
    proc = subprocess.Popen([str(dagster), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(proc.stdout.read().decode()[-3000:])
                time.sleep(1)
        else:
            raise RuntimeError("dagster dev did not answer within 120 s")
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # dagster dev stops its children on SIGINT
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_listens_on_loopback_only(ui):
    assert shutil.which("ss"), "ss (iproute2, installed by scripts/install-system) is needed to see the listener"
    out = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, check=True).stdout
    lines = [l for l in out.splitlines() if f":{ui} " in l + " "]
    assert lines, f"no listener on port {ui} found by ss"  # all([]) would pass vacuously
    assert all("127.0.0.1" in l for l in lines)


def test_graph_served_with_l1000_partitions(ui):
    data = _graphql(ui, "{ assetNodes { assetKey { path } partitionStats { numMaterialized numPartitions } } }")
    nodes = {"/".join(n["assetKey"]["path"]): n["partitionStats"] for n in data["assetNodes"]}
    assert {"source_files", "raw_source", "compound_registry", "harmonized_adata"} <= set(nodes)
    assert nodes["harmonized_adata"] == {"numMaterialized": 2, "numPartitions": 13}


def test_chromium_renders_partitions_page(ui, tmp_path):
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is installed by scripts/install-system"
    url = f"http://127.0.0.1:{ui}/assets/harmonized_adata?view=partitions"
    args = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,900",
            "--virtual-time-budget=20000"]
    dom = subprocess.run([*args, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert "Materialized (2)" in dom
    assert "l1000_phase1" in dom and "dilimap_train_val" in dom
    shot = tmp_path / "harmonized_partitions.png"
    subprocess.run([*args, f"--screenshot={shot}", url], capture_output=True, timeout=120)
    assert shot.stat().st_size > 10_000  # a real rendered page, not an empty canvas


ARTIFACTS = Path(os.environ.get("CPB_TEST_ARTIFACTS", REPO / ".cpb" / "test-artifacts")) / "ui"


def _chromium(tmp_path, url: str, shot_name: str) -> str:
    """The page's DOM after rendering; a screenshot kept as a test artefact."""
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is installed by scripts/install-system"
    args = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,900",
            "--virtual-time-budget=20000"]
    dom = subprocess.run([*args, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / shot_name
    subprocess.run([*args, f"--screenshot={shot}", url], capture_output=True, timeout=120)
    assert shot.stat().st_size > 5_000, shot
    return dom


def test_release_lineage_page_shows_its_upstream_stages(ui, tmp_path):
    dom = _chromium(tmp_path, f"http://127.0.0.1:{ui}/assets/release?view=lineage&lineageScope=upstream",
                    "release_lineage.png")
    for upstream in ("de_table", "harmonized_adata"):
        assert upstream in dom, f"{upstream} not drawn in the release's lineage"


def test_agreement_report_png_opens(ui, tmp_path, l1000_home):
    data = _graphql(ui, '{ assetNodes(assetKeys: [{path: ["agreement_report"]}]) { assetMaterializations(limit: 1) '
                        '{ metadataEntries { label ... on PathMetadataEntry { path } } } } }')
    entries = data["assetNodes"][0]["assetMaterializations"][0]["metadataEntries"]
    pngs = [e["path"] for e in entries if e.get("path", "").endswith(".png")]
    assert pngs, f"no PNG path in the agreement report's metadata: {[e['label'] for e in entries]}"
    png = Path(pngs[0])
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    _chromium(tmp_path, png.as_uri(), "agreement_report.png")
