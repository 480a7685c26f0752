"""Croissant 1.0 JSON-LD for a release: its files, and one record set per released table.

The @context follows the Croissant 1.0 specification (mlcommons.org/croissant/1.0); the
record sets describe each table's columns from its Parquet schema, read through a FileSet
of the table's Parquet files (Hive layout: partition keys are path segments).
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

CROISSANT_CONTEXT = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "sc": "https://schema.org/",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "dct": "http://purl.org/dc/terms/",
    "citeAs": "cr:citeAs",
    "equivalentProperty": "cr:equivalentProperty",
    "samplingRate": "cr:samplingRate",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}
ENCODING = {".parquet": "application/x-parquet", ".h5ad": "application/x-hdf5", ".json": "application/json"}


def _data_type(t: pa.DataType) -> str:
    if pa.types.is_boolean(t):
        return "sc:Boolean"
    if pa.types.is_integer(t):
        return "sc:Integer"
    if pa.types.is_floating(t):
        return "sc:Float"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "sc:Date"
    return "sc:Text"


def table_of(path: str) -> str | None:
    """``tables/de/dataset=x/mode=y/s.parquet`` → ``de`` (None for files outside tables/)."""
    parts = Path(path).parts
    return parts[1] if len(parts) > 2 and parts[0] == "tables" else None


def croissant_metadata(tag: str, files: list[dict], root: Path, *, description: str, licence_summary: str,
                       synthetic: bool, date_published: str) -> dict:
    """The Croissant JSON-LD of a release folder `root` whose manifest lists `files`."""
    distribution, record_sets = [], []
    by_table: dict[str, list[dict]] = defaultdict(list)
    for entry in files:
        suffix = Path(entry["path"]).suffix
        table = table_of(entry["path"])
        if table and suffix == ".parquet":
            by_table[table].append(entry)
            continue
        distribution.append({"@type": "cr:FileObject", "@id": entry["path"], "name": entry["path"],
                             "contentUrl": entry["path"], "encodingFormat": ENCODING.get(suffix, "application/octet-stream"),
                             "sha256": entry["sha256"], "contentSize": f"{entry['bytes']} B"})
    for table, entries in sorted(by_table.items()):
        fs_id = f"fileset-{table}"
        distribution.append({"@type": "cr:FileSet", "@id": fs_id, "name": fs_id,
                             "description": f"{len(entries)} Parquet file(s) of table {table}",
                             "encodingFormat": "application/x-parquet", "includes": f"tables/{table}/**/*.parquet"})
        schema = pq.read_schema(root / entries[0]["path"])
        fields = [{"@type": "cr:Field", "@id": f"{table}/{name}", "name": name,
                   "dataType": _data_type(schema.field(name).type),
                   "source": {"fileSet": {"@id": fs_id}, "extract": {"column": name}}}
                  for name in schema.names]
        record_sets.append({"@type": "cr:RecordSet", "@id": table, "name": table,
                            "description": f"table `{table}` ({sum(e['rows'] or 0 for e in entries)} rows)",
                            "field": fields})
    return {
        "@context": CROISSANT_CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": "http://mlcommons.org/croissant/1.0",
        "name": f"chem-perturbridge-{tag}",
        "description": description + (" SYNTHETIC demo data, not real measurements." if synthetic else ""),
        "license": licence_summary,
        "url": "https://github.com/theislab/Chem-PerturBridge",
        "version": tag if tag[:1].isdigit() else "0.0.0",
        "citeAs": "Chem-PerturBridge compendium release " + tag,
        "datePublished": date_published,
        "distribution": distribution,
        "recordSet": record_sets,
    }
