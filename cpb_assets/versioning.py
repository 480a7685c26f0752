"""code_version from a content hash of the code an asset runs."""
from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent


def code_version(*modules: str, scripts: tuple[str, ...] = ()) -> str:
    """sha256 (first 16 hex digits) over the source files of `modules` and the `scripts`.

    A changed reader or writer changes the version, so Dagster marks the
    asset's materializations stale exactly when its code changed. Files are
    read, not imported, so loading the Definitions stays cheap.

    Parameters
    ----------
    modules
        Dotted names of the Python modules the asset runs.
    scripts
        Paths relative to the repository of non-Python code it runs (the R script of the DE fit).
    """
    h = hashlib.sha256()
    for name in sorted(set(modules)):
        spec = importlib.util.find_spec(name)
        h.update(name.encode())
        # an absent module still versions (as absent): the asset fails at run time, not at load
        h.update(Path(spec.origin).read_bytes() if spec and spec.origin else b"<absent>")
    for rel in sorted(set(scripts)):
        path = REPO / rel
        h.update(rel.encode())
        h.update(path.read_bytes() if path.exists() else b"<absent>")
    return h.hexdigest()[:16]
