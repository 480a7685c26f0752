"""code_version from a content hash of the code an asset runs."""
from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path


def code_version(*modules: str) -> str:
    """sha256 (first 16 hex digits) over the source files of `modules`.

    A changed reader or writer changes the version, so Dagster marks the
    asset's materializations stale exactly when its code changed. Files are
    read, not imported, so loading the Definitions stays cheap.
    """
    h = hashlib.sha256()
    for name in sorted(set(modules)):
        spec = importlib.util.find_spec(name)
        h.update(name.encode())
        # an absent module still versions (as absent): the asset fails at run time, not at load
        h.update(Path(spec.origin).read_bytes() if spec and spec.origin else b"<absent>")
    return h.hexdigest()[:16]
