"""The downloader's checksum policy on files already in a landing folder (no network needed)."""
from __future__ import annotations

import hashlib
import json

import pytest

from cpb_assets.sources.base import RemoteFile
from cpb_assets.sources.download import CHECKSUMS, ChecksumError, download
from cpb_assets.sources.novartis import REMOTE_FILES

UNREACHABLE = "http://127.0.0.1:9/never"  # port 9 (discard): any network attempt fails fast


def test_unpinned_copy_is_trusted_on_first_use_then_verified(tmp_path):
    f = tmp_path / "Exp_gzip.RData"
    f.write_bytes(b"first copy")
    assert download(RemoteFile(UNREACHABLE, f.name), tmp_path, retries=1) == f
    record = json.loads((tmp_path / CHECKSUMS).read_text())
    assert record == {f.name: hashlib.sha256(b"first copy").hexdigest()}
    f.write_bytes(b"tampered")
    with pytest.raises(ChecksumError, match="recorded on first use"):
        download(RemoteFile(UNREACHABLE, f.name), tmp_path, retries=1)


def test_pinned_copy_is_verified_and_unpinned_refused_when_pins_are_required(tmp_path):
    f = tmp_path / "robust.txt"
    f.write_bytes(b"abc")
    pin = hashlib.sha256(b"abc").hexdigest()
    assert download(RemoteFile(UNREACHABLE, f.name, pin), tmp_path, retries=1, require_pin=True) == f
    with pytest.raises(ChecksumError, match="no sha256 is pinned"):
        download(RemoteFile(UNREACHABLE, f.name), tmp_path, retries=1, require_pin=True)


def test_novartis_remote_files_name_the_release_files():
    names = {r.filename for r in REMOTE_FILES["novartis_drugseq"]}
    assert names == {"Exp_gzip.RData", "robust_RC_ReferenceControl_DMSO_wells.txt", "MoABox_compounds_metadata.txt",
                     "drugseq_ensembl_v98_annotation_and_entrez_mapping.RData"}
    assert all(r.licence == "CC-BY-4.0" and r.sha256 is None for r in REMOTE_FILES["novartis_drugseq"])
