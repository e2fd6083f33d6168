"""The filesystem artifact store beyond the port's contract: layout, safety, gc, streaming."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

from quantrack.adapters.filesystem import FilesystemArtifactStore
from quantrack.domain import ArtifactNotFound, IntegrityError, InvalidArtifactId, StorageError


def sha(data: bytes) -> str:
    """The sha256 hex digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> FilesystemArtifactStore:
    """A fresh store in its own folder."""
    return FilesystemArtifactStore(tmp_path / "artifacts")


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


def test_layout_fans_out_by_the_first_two_hex_characters(store: FilesystemArtifactStore) -> None:
    """Content lands at root/ab/cdef... and nothing else is left behind."""
    ref = store.put(b"hello")
    assert (store.root / ref.id[:2] / ref.id[2:]).read_bytes() == b"hello"
    assert sorted(p.name for p in store.root.rglob("*")) == sorted([ref.id[:2], ref.id[2:]])


def test_a_second_instance_sees_what_the_first_stored(tmp_path: Path) -> None:
    """The store is its folder: reopening it finds every artifact."""
    ref = FilesystemArtifactStore(tmp_path / "a").put(b"persisted", name="p.txt")
    again = FilesystemArtifactStore(tmp_path / "a")
    assert again.get(ref.id, verify=True) == b"persisted"
    assert list(again.ids()) == [ref.id]


def test_putting_stored_content_again_does_not_rewrite_it(store: FilesystemArtifactStore) -> None:
    """A repeated put keeps the first file (same inode) and returns an equal reference."""
    first = store.put(b"same bytes", kind="code", name="a.py")
    path = store.root / first.id[:2] / first.id[2:]
    inode = path.stat().st_ino
    second = store.put(b"same bytes", kind="code", name="a.py")
    assert second == first
    assert path.stat().st_ino == inode


def test_concurrent_puts_of_the_same_content_leave_one_file(store: FilesystemArtifactStore) -> None:
    """Threads racing to store identical content all succeed and leave one intact file."""
    data = os.urandom(200_000)
    refs: list[str] = []
    threads = [threading.Thread(target=lambda: refs.append(store.put(data).id)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(refs) == {sha(data)}
    assert list(store.ids()) == [sha(data)]
    store.verify(sha(data))
    assert not list(store.root.rglob(".tmp-*"))


def test_put_file_streams_and_deduplicates(tmp_path: Path, store: FilesystemArtifactStore) -> None:
    """put_file stores a file's bytes under their sha256, named after the file, once."""
    source = tmp_path / "prices.csv"
    source.write_bytes(b"date,close\n" * 50_000)
    ref = store.put_file(source, kind="input", media_type="text/csv")
    assert ref.id == sha(source.read_bytes())
    assert ref.size == source.stat().st_size
    assert ref.name == "prices.csv"
    assert store.put_file(source, kind="input").id == ref.id
    assert store.get(ref.id, verify=True) == source.read_bytes()
    assert not list(store.root.rglob(".tmp-*"))


def test_put_file_of_a_missing_file_says_which(
    tmp_path: Path, store: FilesystemArtifactStore
) -> None:
    """A missing source file raises FileNotFoundError naming the path."""
    with pytest.raises(FileNotFoundError, match=r"nope\.bin"):
        store.put_file(tmp_path / "nope.bin")


def test_verify_streams_and_detects_truncation(store: FilesystemArtifactStore) -> None:
    """A truncated artifact fails verify with IntegrityError naming it."""
    ref = store.put(os.urandom(3_000_000))
    path = store.root / ref.id[:2] / ref.id[2:]
    with path.open("r+b") as handle:
        handle.truncate(1000)
    with pytest.raises(IntegrityError, match=ref.id):
        store.verify(ref.id)


@pytest.mark.parametrize(
    "bad", ["../" * 3 + "etc/passwd", "/etc/passwd", "ab/../../x", "a" * 63 + "\x00", "A" * 64]
)
def test_path_like_ids_never_touch_the_disk(
    tmp_path: Path, store: FilesystemArtifactStore, bad: str
) -> None:
    """Ids holding '../', absolute paths or NUL bytes are refused before any file access."""
    before = sorted(tmp_path.rglob("*"))
    for call in (store.get, store.exists, store.verify, store.delete, store.size):
        with pytest.raises(InvalidArtifactId):
            call(bad)
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("name", ["../../escape.txt", "/etc/passwd", "a\x00b", "..", "c:\\x\\y"])
def test_display_names_never_become_locations(
    tmp_path: Path, store: FilesystemArtifactStore, name: str
) -> None:
    """A hostile display name is sanitized and nothing is written outside the store."""
    ref = store.put(b"x", name=name)
    assert ref.name is None or ("/" not in ref.name and "\x00" not in ref.name)
    outside = [p for p in tmp_path.rglob("*") if not p.is_relative_to(store.root)]
    assert outside == []


def test_a_symlink_planted_at_an_artifact_path_is_not_read(
    tmp_path: Path, store: FilesystemArtifactStore
) -> None:
    """Reading and verifying refuse a symlink standing where an artifact should be."""
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"top secret")
    artifact_id = sha(b"top secret")
    folder = store.root / artifact_id[:2]
    folder.mkdir(parents=True)
    (folder / artifact_id[2:]).symlink_to(secret)
    with pytest.raises(IntegrityError, match="symlink"):
        store.get(artifact_id)
    with pytest.raises(IntegrityError):
        store.verify(artifact_id)
    assert not store.exists(artifact_id)
    assert list(store.ids()) == []


def test_a_planted_symlink_is_never_written_through(
    tmp_path: Path, store: FilesystemArtifactStore
) -> None:
    """Storing content whose path is a planted link refuses and leaves the target untouched."""
    target = tmp_path / "victim.txt"
    target.write_bytes(b"keep me")
    artifact_id = sha(b"payload")
    folder = store.root / artifact_id[:2]
    folder.mkdir(parents=True)
    (folder / artifact_id[2:]).symlink_to(target)
    with pytest.raises(IntegrityError):
        store.put(b"payload")
    assert target.read_bytes() == b"keep me"
    # delete removes the link itself, never its target.
    assert store.delete(artifact_id)
    assert target.read_bytes() == b"keep me"
    assert store.put(b"payload").id == artifact_id


def test_a_symlinked_fanout_folder_is_refused(
    tmp_path: Path, store: FilesystemArtifactStore
) -> None:
    """A fan-out folder replaced by a link to elsewhere is neither read nor written."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    artifact_id = sha(b"data")
    (outside / artifact_id[2:]).write_bytes(b"data")
    (store.root / artifact_id[:2]).symlink_to(outside, target_is_directory=True)
    with pytest.raises(IntegrityError):
        store.get(artifact_id)
    with pytest.raises(IntegrityError):
        store.put(b"data")
    assert list(store.ids()) == []
    assert sorted(p.name for p in outside.iterdir()) == [artifact_id[2:]]


def test_ids_skip_foreign_and_temporary_files(store: FilesystemArtifactStore) -> None:
    """Only well-formed artifact files count as artifacts."""
    ref = store.put(b"real")
    (store.root / ref.id[:2] / "notes.txt").write_text("x")
    (store.root / ref.id[:2] / f".tmp-{ref.id[2:18]}-1-abcd").write_bytes(b"partial")
    (store.root / "zz").mkdir()
    (store.root / "README").write_text("hi")
    assert list(store.ids()) == [ref.id]


def test_gc_removes_unreferenced_artifacts_and_reports_bytes(
    store: FilesystemArtifactStore,
) -> None:
    """Garbage collection keeps what is in keep and removes the rest, counting bytes freed."""
    kept = store.put(b"kept")
    dropped = store.put(b"dropped!")
    report = store.gc({kept.id}, grace_seconds=0)
    assert report.removed == (dropped.id,)
    assert report.bytes_freed == len(b"dropped!")
    assert not report.dry_run
    assert list(store.ids()) == [kept.id]


def test_gc_dry_run_removes_nothing(store: FilesystemArtifactStore) -> None:
    """A dry run reports what would go and leaves the store as it was."""
    ref = store.put(b"orphan")
    report = store.gc(set(), dry_run=True, grace_seconds=0)
    assert report.removed == (ref.id,)
    assert report.dry_run
    assert store.exists(ref.id)


def test_gc_spares_recent_writes_within_the_grace_period(store: FilesystemArtifactStore) -> None:
    """An unreferenced artifact written moments ago survives gc; an old one does not."""
    fresh = store.put(b"fresh")
    old = store.put(b"old")
    _age(store.root / old.id[:2] / old.id[2:], 7200)
    report = store.gc(set(), grace_seconds=3600)
    assert report.removed == (old.id,)
    assert store.exists(fresh.id)


def test_putting_again_renews_the_grace_period(store: FilesystemArtifactStore) -> None:
    """Re-using old content (a put that deduplicates) protects it from the next gc."""
    ref = store.put(b"reused")
    _age(store.root / ref.id[:2] / ref.id[2:], 7200)
    store.put(b"reused")
    assert store.gc(set(), grace_seconds=3600).removed == ()


def test_gc_cleans_leftovers_of_interrupted_writes(store: FilesystemArtifactStore) -> None:
    """Old temporary files from crashed writes are removed and counted; fresh ones stay."""
    ref = store.put(b"x")
    old_temp = store.root / ref.id[:2] / ".tmp-0123456789abcdef-99-dead"
    old_temp.write_bytes(b"partial write")
    _age(old_temp, 7200)
    stream_temp = store.root / ".tmp-stream-99-beef"
    stream_temp.write_bytes(b"partial stream")
    _age(stream_temp, 7200)
    in_flight = store.root / ref.id[:2] / ".tmp-fedcba9876543210-98-cafe"
    in_flight.write_bytes(b"being written")
    report = store.gc({ref.id}, grace_seconds=3600)
    assert report.temp_files_removed == 2
    assert report.bytes_freed == len(b"partial write") + len(b"partial stream")
    assert not old_temp.exists()
    assert not stream_temp.exists()
    assert in_flight.exists()
    assert store.exists(ref.id)


def test_gc_rejects_bad_arguments(store: FilesystemArtifactStore) -> None:
    """A malformed keep id or a negative grace period is refused before anything is removed."""
    ref = store.put(b"x")
    with pytest.raises(InvalidArtifactId):
        store.gc({"../x"}, grace_seconds=0)
    with pytest.raises(ValueError, match="grace_seconds"):
        store.gc(set(), grace_seconds=-1)
    assert store.exists(ref.id)


def test_missing_artifact_in_an_existing_fanout_folder(store: FilesystemArtifactStore) -> None:
    """A missing id whose fan-out folder exists still raises ArtifactNotFound."""
    ref = store.put(b"a")
    missing = ref.id[:2] + "0" * 62
    with pytest.raises(ArtifactNotFound):
        store.get(missing)
    with pytest.raises(ArtifactNotFound):
        store.size(missing)


def test_unusable_root_is_a_clear_error(tmp_path: Path) -> None:
    """A root below a regular file cannot be created, and the error names it."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StorageError, match="cannot create the artifact folder"):
        FilesystemArtifactStore(blocker / "artifacts")


def _put_many(root: str, seed: int) -> list[str]:
    """Store 20 shared and 5 private blobs from one process; return their ids."""
    store = FilesystemArtifactStore(root)
    shared = [store.put(f"shared {i}".encode() * 1000).id for i in range(20)]
    private = [store.put(f"process {seed} blob {i}".encode()).id for i in range(5)]
    return shared + private


def test_several_processes_writing_one_store_lose_nothing(tmp_path: Path) -> None:
    """Processes racing on shared and private content all succeed; every blob is intact."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    root = str(tmp_path / "artifacts")
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=3, mp_context=context) as pool:
        results = list(pool.map(_put_many, [root] * 3, range(3)))
    store = FilesystemArtifactStore(root)
    expected = {artifact_id for ids in results for artifact_id in ids}
    assert len(expected) == 20 + 3 * 5
    assert set(store.ids()) == expected
    for artifact_id in expected:
        store.verify(artifact_id)
    assert not list(store.root.rglob(".tmp-*"))
