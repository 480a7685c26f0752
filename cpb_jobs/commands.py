"""``cpb status``, ``cpb sql``, ``cpb release``, ``cpb audit`` and ``cpb verify`` (the `cpb` command's admin side).

Each returns a process exit status; ``cpb_jobs.cli`` parses the arguments.
"""
from __future__ import annotations

import sys
import warnings


def _say(text: str = "", out=None) -> None:
    print(text, file=out or sys.stdout, flush=True)


def _progress(label: str, out=None):
    def show(i: int, n: int) -> None:
        if n and (i == n or i % max(1, n // 20) == 0):
            full = int(20 * i / n)
            stream = out or sys.stderr
            print(f"\r{label} [{'#' * full}{'-' * (20 - full)}] {i}/{n}", end="\n" if i == n else "", file=stream,
                  flush=True)
    return show


def status(home: str | None = None, asset: str | None = None, show_all: bool = False, out=None) -> int:
    """Per asset and partition: fresh, stale (with the reason) or missing."""
    warnings.filterwarnings("ignore")
    from cpb_jobs.demo import prepare_environment

    prepare_environment(home)
    import dagster as dg
    from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
    from dagster._core.loader import LoadingContext

    from cpb_jobs.definitions import defs

    class Loading(LoadingContext):  # the batch loaders Dagster's staleness resolver reads the instance through
        def __init__(self, instance):
            self._instance, self._loaders = instance, {}

        @property
        def instance(self):
            return self._instance

        @property
        def loaders(self):
            return self._loaders

    graph = defs.resolve_asset_graph()
    rows, counts = [], {}
    with dg.DagsterInstance.get() as instance:
        resolver = CachingStaleStatusResolver(instance, graph, Loading(instance))
        for key in sorted(graph.materializable_asset_keys, key=lambda k: k.to_user_string()):
            name = key.to_user_string()
            if asset and name != asset:
                continue
            node = graph.get(key)
            for pk in (node.partitions_def.get_partition_keys() if node.partitions_def else [None]):
                st = resolver.get_status(key, pk)
                label = {StaleStatus.FRESH: "materialized", StaleStatus.STALE: "stale",
                         StaleStatus.MISSING: "missing"}[st]
                counts.setdefault(name, {"materialized": 0, "stale": 0, "missing": 0})[label] += 1
                reason = ""
                if st == StaleStatus.STALE:
                    causes = resolver.get_stale_causes(key, pk)
                    reason = "; ".join(sorted({f"{c.reason} ({c.dependency.asset_key.to_user_string()})"
                                               if getattr(c, "dependency", None) else c.reason
                                               for c in causes}))[:160]
                if show_all or st != StaleStatus.FRESH:
                    rows.append((name, pk or "-", label, reason))
    from tabulate import tabulate

    _say(tabulate([(a, c["materialized"], c["stale"], c["missing"]) for a, c in counts.items()],
                  headers=["asset", "materialized", "stale", "missing"]), out)
    if rows:
        _say("", out)
        _say(tabulate(rows, headers=["asset", "partition", "status", "reason"]), out)
    if asset and asset not in counts:
        _say(f"cpb status: no asset named {asset!r}", out)
        return 2
    return 0


def sql(query: str, home: str | None = None, csv: str | None = None, parquet: str | None = None,
        max_rows: int = 50, out=None) -> int:
    """Run a read-only query on the DuckDB catalog; print it, or write it with --csv/--parquet."""
    from cpb_jobs.demo import prepare_environment

    cpb_home = prepare_environment(home)
    import duckdb

    from cpb_resources.catalog import query_catalog

    db = cpb_home / "catalog.duckdb"
    if not db.exists():
        _say(f"cpb sql: no catalog at {db} (materialize something first, e.g. make demo)", out)
        return 2
    try:
        df = query_catalog(db, query)
    except duckdb.Error as exc:
        _say(f"cpb sql: {exc}", out)
        return 1
    if csv:
        df.to_csv(csv, index=False)
        _say(f"{len(df)} rows -> {csv}", out)
    elif parquet:
        df.to_parquet(parquet, index=False)
        _say(f"{len(df)} rows -> {parquet}", out)
    else:
        from tabulate import tabulate

        _say(tabulate(df.head(max_rows), headers="keys", showindex=False, floatfmt=".4g"), out)
        if len(df) > max_rows:
            _say(f"… {len(df)} rows in all (showing {max_rows}; --csv/--parquet writes them all)", out)
    return 0


def release(tag: str, home: str | None = None, out=None) -> int:
    """Materialize the `release` asset with `tag` through Dagster (recorded in the instance)."""
    warnings.filterwarnings("ignore")
    from cpb_jobs.demo import prepare_environment

    prepare_environment(home)
    import dagster as dg

    from cpb_jobs.definitions import ALL_ASSETS, ALL_CHECKS, defs

    _say(f"cpb release {tag}: copying tables, hashing files, recording lineage …", out)
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize([*ALL_ASSETS, *ALL_CHECKS], selection=dg.AssetSelection.assets("release"),
                                instance=instance, resources=defs.resources, raise_on_error=False,
                                run_config={"ops": {"release": {"config": {"tag": tag}}}},
                                tags={"cpb/launched_by": "cpb release"})
    if not result.success:
        for ev in result.all_events:
            if ev.is_step_failure:
                error = ev.step_failure_data.error
                while error.cause is not None:  # the user code's own error, not Dagster's wrapper
                    error = error.cause
                _say(f"cpb release: {error.message.strip()[:600]}", out)
        return 1
    (mat,) = result.asset_materializations_for_node("release")
    meta = {k: v.value for k, v in mat.metadata.items()}
    _say(f"release {tag}: {meta['files']} files, {meta['bytes'] / 2**20:.1f} MiB, {meta['partitions']} partitions "
         f"-> {meta['path']}", out)
    return 0


def audit(tag: str, home: str | None = None, lineage_key: str | None = None, out=None) -> int:
    """Re-hash a release (exit 1 on any mismatch); optionally print one partition's lineage."""
    from cpb_jobs.demo import prepare_environment

    cpb_home = prepare_environment(home)
    from cpb_assets.release.audit import audit_release, lineage
    from cpb_assets.release.manifest import ReleaseError, read_manifest

    folder = cpb_home / "releases" / tag
    try:
        manifest = read_manifest(folder)
    except ReleaseError as exc:
        _say(f"cpb audit: {exc}", out)
        return 2
    report = audit_release(folder, progress=_progress(f"audit {tag}", out))
    for line in report.lines():
        _say(line, out)
    if lineage_key:
        _say("", out)
        try:
            for line in lineage(manifest, lineage_key):
                _say(line, out)
        except KeyError as exc:
            _say(f"cpb audit: {exc.args[0]}", out)
            return 1
    return 0 if report.ok else 1


def verify(home: str | None = None, rebuild: bool = False, out=None) -> int:
    """Check every published multi-file product against the sha256 manifest it was published with.

    Exit 0 when all are intact. A damaged one is listed file by file; with
    `rebuild` it is withdrawn (moved to ``$CPB_HOME/corrupt/``, so it is never
    served) and its asset partition is materialized again through Dagster,
    upstream first; exit 0 when every rebuild succeeded and verifies. Without
    `rebuild`, exit 1 when anything is damaged.
    """
    warnings.filterwarnings("ignore")
    from cpb_jobs.demo import _materialize, prepare_environment

    cpb_home = prepare_environment(home)
    from cpb_resources.storage import published_bundles, unpublish, verify_published

    bundles = published_bundles(cpb_home)
    damaged = []
    for version, manifest in bundles:
        problems = verify_published(version)
        if problems:
            damaged.append((version, manifest, problems))
            part = manifest.get("partition")
            label = "|".join(part.values()) if isinstance(part, dict) else part
            _say(f"DAMAGED {manifest.get('asset')}[{label}]", out)
            for line in problems:
                _say(f"  {line}", out)
    _say(f"{len(bundles)} published product(s) checked, {len(damaged)} damaged", out)
    if not damaged or not rebuild:
        return 1 if damaged else 0
    from cpb_jobs.definitions import defs

    # upstream first: the asset graph's topological order
    order = [k.to_user_string() for k in defs.resolve_asset_graph().toposorted_asset_keys]
    damaged.sort(key=lambda d: order.index(d[1]["asset"]) if d[1].get("asset") in order else len(order))
    failed = 0
    for version, manifest, _ in damaged:
        asset, part = manifest["asset"], manifest["partition"]
        label = f"{asset}[{'|'.join(part.values()) if isinstance(part, dict) else part}]"
        moved = unpublish(version, cpb_home / "corrupt", label.replace("[", "__").rstrip("]"))
        _say(f"withdrawn {label} -> {moved}; rebuilding", out)
        shown, ok, seconds, errors = _materialize(asset, part)
        now = [p for v, m in published_bundles(cpb_home) if (m.get("asset"), m.get("partition")) == (asset, part)
               for p in verify_published(v)]
        ok = ok and not now
        failed += not ok
        _say(f"  [{'ok ' if ok else 'FAILED'}] {shown} {seconds:.1f} s", out)
        for line in [*errors, *now]:
            _say(f"    {line}", out)
    return 1 if failed else 0
