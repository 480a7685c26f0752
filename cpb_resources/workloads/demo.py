"""Tiny demo workloads for the compute layer's tests (and as templates).

``write_table``  writes a deterministic Parquet table (optionally after sleeping
                 with its temporary file open, so a test can scancel it mid-write);
``fail``         raises, to test that the step fails with the remote traceback.
"""
from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from cpb_resources.workloads import atomic_output

log = logging.getLogger(__name__)


def _table(n_rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "gene": [f"G{i:05d}" for i in range(n_rows)],
            "logfc": rng.normal(0.0, 1.0, n_rows).round(10),
            "pvalue": rng.uniform(0.0, 1.0, n_rows).round(12),
            "count": rng.integers(0, 1000, n_rows, dtype=np.int64),
        }
    )


def write_table(params: dict) -> dict:
    """params: out (abs path of the .parquet), n_rows (int), seed (int),
    sleep_s (float, default 0: time spent with the temporary file half written)."""
    out = Path(params["out"])
    n_rows = int(params.get("n_rows", 1000))
    seed = int(params.get("seed", 0))
    sleep_s = float(params.get("sleep_s", 0))
    df = _table(n_rows, seed)
    log.info("writing %d rows (seed %d) to %s", n_rows, seed, out)
    with atomic_output(out) as tmp:
        if sleep_s > 0:
            # A half-written file under the temporary name, as a long job would leave.
            tmp.write_bytes(b"PAR1 partial")
            log.info("sleeping %.1fs with the temporary file %s open", sleep_s, tmp.name)
            time.sleep(sleep_s)
        df.to_parquet(tmp, index=False, engine="pyarrow", compression="zstd")
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    return {
        "outputs": [str(out)],
        "metadata": {"rows": n_rows, "sha256": digest, "path": str(out)},
    }


def fail(params: dict) -> dict:
    """Always raises ValueError; params: message (str)."""
    log.info("about to fail on purpose")
    _inner_failure(str(params.get("message", "demo workload failed on purpose")))
    return {}


def _inner_failure(message: str) -> None:
    raise ValueError(message)


def fail_once(params: dict) -> dict:
    """Fails on the first call (creating ``flag``), then writes the table like :func:`write_table`.

    params: flag (abs path of the flag file), plus those of write_table.
    """
    flag = Path(params["flag"])
    if not flag.exists():
        flag.parent.mkdir(parents=True, exist_ok=True)
        flag.write_text("failed once\n")
        _inner_failure(f"first attempt fails on purpose (flag {flag})")
    return write_table(params)
