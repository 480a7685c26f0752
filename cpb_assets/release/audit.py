"""Audit a release: re-hash every file, and walk any released partition back to its sources."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from cpb_assets.release.manifest import MANIFEST, read_manifest, sha256_of

# files of the release folder that describe it rather than being listed in the manifest
DESCRIPTORS = {MANIFEST, "croissant.json", "licences.json", "README.md"}


@dataclass
class AuditReport:
    """What the re-hash found. ``ok`` only when nothing is missing, modified or unlisted."""

    checked: int = 0
    missing: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)  # sha256 or size differ
    unlisted: list[str] = field(default_factory=list)  # files in the folder the manifest does not name

    @property
    def ok(self) -> bool:
        return not (self.missing or self.modified or self.unlisted)

    def lines(self) -> list[str]:
        out = [f"checked {self.checked} files"]
        out += [f"MISSING  {p}" for p in self.missing]
        out += [f"MODIFIED {p}" for p in self.modified]
        out += [f"UNLISTED {p}" for p in self.unlisted]
        out.append("OK: every file matches the manifest" if self.ok else
                   f"FAILED: {len(self.missing)} missing, {len(self.modified)} modified, {len(self.unlisted)} unlisted")
        return out


def audit_release(folder: Path, progress: Callable[[int, int], None] | None = None) -> AuditReport:
    """Re-hash every file the manifest lists; report missing, modified and unlisted files by name."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    report = AuditReport()
    listed = set()
    entries = manifest["files"]
    for i, entry in enumerate(entries):
        rel = entry["path"]
        listed.add(rel)
        path = folder / rel
        report.checked += 1
        if not path.is_file():
            report.missing.append(rel)
        elif path.stat().st_size != entry["bytes"] or sha256_of(path) != entry["sha256"]:
            report.modified.append(rel)
        if progress:
            progress(i + 1, len(entries))
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel not in listed and rel not in DESCRIPTORS:
            report.unlisted.append(rel)
    return report


def lineage(manifest: dict, key: str) -> list[str]:
    """The lineage of one released partition (``asset/partition``), back to source files and code.

    One line per partition, indented by depth; raw-source partitions list their files.
    """
    parts = manifest["partitions"]
    if key not in parts:
        close = sorted(k for k in parts if k.split("/")[0] == key.split("/")[0])[:10]
        raise KeyError(f"{key!r} is not a partition of release {manifest['tag']!r}"
                       + (f"; partitions of that asset: {close}" if close else ""))
    lines: list[str] = []
    seen: set[str] = set()

    def walk(k: str, depth: int) -> None:
        p = parts.get(k)
        pad = "  " * depth
        if p is None:
            lines.append(f"{pad}{k}  (not materialized when the release was made)")
            return
        lines.append(f"{pad}{k}  code {p['code_version'] or '-'}  data {(p['data_version'] or '-')[:16]}  "
                     f"run {(p['run_id'] or '-')[:8]}")
        if k in seen:
            return
        seen.add(k)
        for name, digest in sorted(p.get("source_files", {}).items()):
            lines.append(f"{pad}  file {name}  sha256 {digest}")
        for up in p.get("upstream", []):
            up_key = f"{up['asset']}/{up['partition']}" if up.get("partition") else up["asset"]
            walk(up_key, depth + 1)

    walk(key, 0)
    return lines
