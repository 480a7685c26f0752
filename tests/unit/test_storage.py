"""Atomic writes: a crash never leaves a half file under the real name."""
import os
import time

import pandas as pd
import pytest

from cpb_resources.storage import (CorruptProduct, atomic_bundle, atomic_path, published_bundles, require_intact,
                                    verify_published, write_parquet)


class Boom(RuntimeError):
    pass


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def test_success_renames_into_place(tmp_path):
    target = tmp_path / "t.txt"
    with atomic_path(target) as tmp:
        tmp.write_text("hello")
        assert not target.exists()  # invisible until complete
    assert target.read_text() == "hello"
    assert _leftovers(tmp_path) == ["t.txt"]


def test_crash_keeps_previous_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "t.parquet"
    write_parquet(pd.DataFrame({"a": [1, 2]}), target)
    before = target.read_bytes()
    with pytest.raises(Boom):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"PAR1 half a file")
            raise Boom()
    assert target.read_bytes() == before
    assert _leftovers(tmp_path) == ["t.parquet"]


def test_crash_on_first_write_leaves_nothing(tmp_path):
    target = tmp_path / "sub" / "x.h5ad"
    with pytest.raises(Boom):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"\x89HDF")
            raise Boom()
    assert not target.exists() and _leftovers(tmp_path / "sub") == []


def test_directory_replace_is_atomic(tmp_path):
    target = tmp_path / "dataset"
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "a.txt").write_text("1")
    with pytest.raises(Boom):
        with atomic_path(target, is_dir=True) as tmp:
            (tmp / "b.txt").write_text("partial")
            raise Boom()
    assert _leftovers(target) == ["a.txt"]
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "c.txt").write_text("3")
    assert _leftovers(target) == ["c.txt"] and _leftovers(tmp_path) == [".dataset.versions", "dataset"]
    # the folder is a link to a complete version; the previous version is kept for readers, older ones go
    assert target.is_symlink() and oct(target.resolve().stat().st_mode & 0o777) == "0o755"
    assert len(list((tmp_path / ".dataset.versions").iterdir())) == 2


def test_folder_switch_is_one_rename_readers_never_see_a_gap(tmp_path):
    """A reader polling the folder while versions are published sees a complete version every time."""
    import threading

    target = tmp_path / "part"
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "a.parquet").write_text("v0")
        (tmp / "b.parquet").write_text("v0")
    seen, stop = [], threading.Event()

    def reader():  # the reader contract: resolve the link once, then read inside that version
        while not stop.is_set():
            version = target.resolve()
            names = sorted(p.name for p in version.iterdir())
            contents = {(version / n).read_text() for n in names}
            seen.append((tuple(names), tuple(sorted(contents))))

    t = threading.Thread(target=reader)
    t.start()
    for i in range(1, 40):
        with atomic_path(target, is_dir=True) as tmp:
            (tmp / "a.parquet").write_text(f"v{i}")
            (tmp / "b.parquet").write_text(f"v{i}")
    stop.set()
    t.join()
    assert seen and all(names == ("a.parquet", "b.parquet") and len(contents) == 1 for names, contents in seen)
    assert (target / "a.parquet").read_text() == "v39"


@pytest.mark.parametrize("kind", ["folder", "bundle"])
def test_retired_versions_stay_for_the_grace_period_then_go(tmp_path, monkeypatch, kind):
    """A version two publications old stays while it was retired less than CPB_RETIRED_GRACE_S ago (a reader
    that resolved it just before two quick publications can finish), and goes once retired longer ago."""
    monkeypatch.setenv("CPB_RETIRED_GRACE_S", "60")
    if kind == "folder":
        versions, current = tmp_path / ".part.versions", tmp_path / "part"

        def publish(i):
            with atomic_path(current, is_dir=True) as tmp:
                (tmp / "a.txt").write_text(f"v{i}")
    else:
        versions, current = tmp_path / "b" / "versions", tmp_path / "b" / "current"

        def publish(i):
            _publish(tmp_path / "b", {"data.txt": tmp_path / "d.txt", "table": tmp_path / "t"}, f"v{i}")
    names = []
    for i in range(3):
        publish(i)
        names.append(os.readlink(current).rsplit("/", 1)[-1])
    assert sorted(p.name for p in versions.iterdir()) == sorted(names)  # v0 retired just now: kept
    old = time.time() - 61
    os.utime(versions / names[0], (old, old))  # v0 retired 61 s ago
    publish(3)
    names.append(os.readlink(current).rsplit("/", 1)[-1])
    # v0 goes; v1 (retired at v2's publication, moments ago) stays; v2 is the previous, v3 the current
    assert sorted(p.name for p in versions.iterdir()) == sorted(names[1:])
    monkeypatch.setenv("CPB_RETIRED_GRACE_S", "soon")
    with pytest.raises(ValueError, match="CPB_RETIRED_GRACE_S"):  # refused before anything is written
        publish(4)
    assert os.readlink(current).rsplit("/", 1)[-1] == names[-1] and len(list(versions.iterdir())) == 3


def test_legacy_real_folder_is_migrated_to_a_version(tmp_path):
    target = tmp_path / "old"
    target.mkdir()
    (target / "x.txt").write_text("legacy")
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "y.txt").write_text("new")
    assert target.is_symlink() and _leftovers(target) == ["y.txt"]


def test_killed_writer_leaves_previous_file(tmp_path):
    """A process killed mid-write (SIGKILL: no cleanup runs) still never corrupts the real name."""
    target = tmp_path / "t.bin"
    target.write_bytes(b"old")
    pid = os.fork()
    if pid == 0:  # child: start writing, then die without any cleanup
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"new but never finished")
            os.kill(os.getpid(), 9)
    os.waitpid(pid, 0)
    assert target.read_bytes() == b"old"


def test_partition_lock_makes_a_second_run_wait_and_survives_sigkill(tmp_path):
    import multiprocessing as mp
    import time as _time

    from cpb_resources.storage import StorageResource

    storage = StorageResource(home=str(tmp_path))
    ctx = mp.get_context("fork")
    started = ctx.Event()

    def holder():
        with storage.partition_lock("harmonized_adata", "l1000_phase1"):
            started.set()
            _time.sleep(60)  # killed long before this ends

    proc = ctx.Process(target=holder)
    proc.start()
    assert started.wait(30)
    # a second "run" waits while the first holds the partition…
    with pytest.raises(TimeoutError, match=r"harmonized_adata\[l1000_phase1\] stayed locked"):
        with storage.partition_lock("harmonized_adata", "l1000_phase1", timeout_s=0.5):
            pass
    # …another partition is free meanwhile…
    with storage.partition_lock("harmonized_adata", "l1000_phase2", timeout_s=0.5):
        pass
    # …and a holder killed with SIGKILL releases it (the kernel drops the lock)
    os.kill(proc.pid, 9)
    proc.join()
    with storage.partition_lock("harmonized_adata", "l1000_phase1", timeout_s=5):
        pass


def _publish(bundle, entries, text, fail=False):
    with atomic_bundle(bundle, entries, about={"asset": "a", "partition": "p"}) as tmp:
        (tmp / "data.txt").write_text(text)
        (tmp / "table").mkdir()
        (tmp / "table" / "part.txt").write_text(text.upper())
        if fail:
            raise Boom()


def test_bundle_members_switch_together_and_the_previous_version_stays(tmp_path):
    bundle = tmp_path / ".bundles" / "a" / "p"
    entries = {"data.txt": tmp_path / "data" / "p.txt", "table": tmp_path / "tables" / "t" / "dataset=p"}
    _publish(bundle, entries, "one")
    first = os.readlink(bundle / "current")
    assert (tmp_path / "data" / "p.txt").read_text() == "one"
    assert (tmp_path / "tables" / "t" / "dataset=p" / "part.txt").read_text() == "ONE"
    link_before = os.readlink(tmp_path / "data" / "p.txt")
    _publish(bundle, entries, "two")
    # entries are stable links through `current`: one rename moved both members
    assert os.readlink(tmp_path / "data" / "p.txt") == link_before
    assert not os.readlink(tmp_path / "data" / "p.txt").startswith("/")  # relative: the home can move
    assert (tmp_path / "data" / "p.txt").read_text() == "two"
    assert (tmp_path / "tables" / "t" / "dataset=p" / "part.txt").read_text() == "TWO"
    assert sorted(p.name for p in (bundle / "versions").iterdir()) == sorted(
        [first.split("/")[-1], os.readlink(bundle / "current").split("/")[-1]])
    assert oct((bundle / "current" / "table").stat().st_mode)[-3:] == "755"
    assert oct((tmp_path / "data" / "p.txt").stat().st_mode)[-3:] == "644"


def test_bundle_failure_publishes_nothing_and_leaves_no_staging(tmp_path):
    bundle = tmp_path / "b"
    entries = {"data.txt": tmp_path / "d.txt", "table": tmp_path / "t"}
    _publish(bundle, entries, "one")
    with pytest.raises(Boom):
        _publish(bundle, entries, "two", fail=True)
    assert (tmp_path / "d.txt").read_text() == "one" and (tmp_path / "t" / "part.txt").read_text() == "ONE"
    assert not list((bundle / "versions").glob(".staging.*"))
    with pytest.raises(FileNotFoundError, match="members"):  # a member not written: nothing published
        with atomic_bundle(bundle, {**entries, "extra": tmp_path / "x"}) as tmp:
            (tmp / "data.txt").write_text("three")
            (tmp / "table").mkdir()
    assert (tmp_path / "d.txt").read_text() == "one" and not (tmp_path / "x").exists()


def test_bundle_replaces_an_unversioned_folder_and_a_file_entry(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "old.txt").write_text("old")
    (tmp_path / "d.txt").write_text("old")
    _publish(tmp_path / "b", {"data.txt": tmp_path / "d.txt", "table": tmp_path / "t"}, "new")
    assert (tmp_path / "t").is_symlink() and sorted(p.name for p in (tmp_path / "t").iterdir()) == ["part.txt"]
    assert (tmp_path / "d.txt").read_text() == "new"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith((".replaced", ".link"))]


@pytest.mark.parametrize("damage, expected", [
    (lambda f: f.write_bytes(f.read_bytes()[:3]), "3 bytes, 8 when published (truncated?)"),
    (lambda f: f.write_bytes(b"tw0-" + f.read_bytes()[4:]), "sha256 differs"),
    (lambda f: f.unlink(), "missing"),
])
def test_verify_published_names_the_damaged_file(tmp_path, damage, expected):
    bundle = tmp_path / ".bundles" / "a" / "p"
    entries = {"data.txt": tmp_path / "d.txt", "table": tmp_path / "t"}
    _publish(bundle, entries, "two-more")
    assert verify_published(tmp_path / "t") == [] and verify_published(tmp_path / "d.txt") == []
    damage((tmp_path / "t" / "part.txt").resolve())
    problems = verify_published(tmp_path / "t")
    assert len(problems) == 1 and problems[0].startswith(f"{tmp_path / 't' / 'part.txt'}: ")
    assert expected in problems[0]
    assert verify_published(tmp_path / "d.txt") == []  # the other member is intact
    [(version, manifest)] = published_bundles(tmp_path)
    assert manifest["asset"] == "a" and verify_published(version) == problems  # named by the entry path
    with pytest.raises(CorruptProduct, match="Rebuild it: cpb verify --rebuild"):
        require_intact(tmp_path / "t", "cpb verify --rebuild")


def test_only_bundle_versions_count_as_published(tmp_path):
    # a stray MANIFEST.json above the bundles' root is never taken for a version's manifest
    (tmp_path / "MANIFEST.json").write_text('{"files": {"plain.txt": {"bytes": 1, "sha256": "0"}}}')
    (tmp_path / "plain.txt").write_text("not published")
    assert verify_published(tmp_path / "plain.txt") == []
    # a member named "current" inside a version is not a bundle's link
    bundle = tmp_path / ".bundles" / "a" / "p"
    with atomic_bundle(bundle, {"current": tmp_path / "c"}, {"asset": "a"}) as tmp:
        (tmp / "current").mkdir()
        (tmp / "current" / "part.txt").write_text("x")
    [(version, manifest)] = published_bundles(tmp_path)
    assert version == (bundle / "current").resolve() and manifest["asset"] == "a"
    (tmp_path.parent / f"{tmp_path.name}-link").symlink_to(tmp_path)  # a home reached through a symlink
    assert [v for v, _ in published_bundles(tmp_path.parent / f"{tmp_path.name}-link")] == [version]
    assert verify_published(tmp_path / "c") == []
    (tmp_path / "c" / "part.txt").resolve().write_text("y")
    assert "sha256 differs" in verify_published(tmp_path / "c")[0]
