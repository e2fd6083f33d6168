"""The ArtifactStore contract, run against every store adapter in tests/adapters.py.

Damage detection needs a way to damage stored content, which only each adapter knows:
``CORRUPTORS`` maps an adapter name (its key in ``tests.adapters.ARTIFACT_STORES``) to a
function that replaces the content stored under an id without changing the id. An adapter
without an entry fails the damage tests, so a new adapter must add one here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from quantrack.adapters.filesystem import FilesystemArtifactStore
from quantrack.adapters.memory import InMemoryArtifactStore
from quantrack.domain import ArtifactNotFound, IntegrityError, InvalidArtifactId
from quantrack.ports import ArtifactStore


def _corrupt_memory(store: ArtifactStore, artifact_id: str, data: bytes) -> None:
    assert isinstance(store, InMemoryArtifactStore)
    store.corrupt(artifact_id, data)


def _corrupt_filesystem(store: ArtifactStore, artifact_id: str, data: bytes) -> None:
    assert isinstance(store, FilesystemArtifactStore)
    (store.root / artifact_id[:2] / artifact_id[2:]).write_bytes(data)


Corruptor = Callable[[ArtifactStore, str, bytes], None]
CORRUPTORS: dict[str, Corruptor] = {
    "memory": _corrupt_memory,
    "filesystem": _corrupt_filesystem,
}


def sha(data: bytes) -> str:
    """The sha256 hex digest: the id content must be stored under."""
    return hashlib.sha256(data).hexdigest()


def test_put_returns_a_content_addressed_reference(store: ArtifactStore) -> None:
    """Put returns the sha256 of the bytes as id, their size, and the given metadata."""
    data = b"date,close\n2024-01-02,100.5\n"
    made = store.put(data, kind="input", media_type="text/csv", name="prices.csv")
    assert made.id == sha(data)
    assert made.size == len(data)
    assert made.kind == "input"
    assert made.media_type == "text/csv"
    assert made.name == "prices.csv"
    assert store.get(made.id) == data
    assert store.exists(made.id)
    assert store.size(made.id) == len(data)


def test_put_defaults(store: ArtifactStore) -> None:
    """Without metadata a reference is a generic file of unknown type."""
    made = store.put(b"x")
    assert made.kind == "file"
    assert made.media_type == "application/octet-stream"
    assert made.name is None


def test_empty_and_binary_content(store: ArtifactStore) -> None:
    """Empty content and every byte value are stored exactly."""
    empty = store.put(b"")
    every_byte = store.put(bytes(range(256)) * 4)
    assert store.get(empty.id) == b""
    assert store.size(empty.id) == 0
    assert store.get(every_byte.id) == bytes(range(256)) * 4


def test_identical_content_is_stored_once(store: ArtifactStore) -> None:
    """Putting the same bytes twice (under any name or kind) yields one stored artifact."""
    first = store.put(b"same", kind="trades", name="a.csv")
    second = store.put(b"same", kind="equity_curve", name="b.csv")
    assert first.id == second.id
    assert second.kind == "equity_curve"
    assert second.name == "b.csv"
    assert list(store.ids()) == [first.id]
    assert store.get(first.id) == b"same"


def test_ids_lists_every_stored_artifact(store: ArtifactStore) -> None:
    """ids() yields each stored id exactly once."""
    made = {store.put(f"blob {i}".encode()).id for i in range(10)}
    listed = list(store.ids())
    assert sorted(listed) == sorted(made)


def test_empty_store(store: ArtifactStore) -> None:
    """A fresh store holds nothing."""
    assert list(store.ids()) == []
    assert not store.exists(sha(b"anything"))


@pytest.mark.parametrize(
    "name",
    ["../../etc/passwd", "/abs/path/x.csv", "C:\\windows\\x.csv", "nul\x00.csv", "a/b/c.txt"],
)
def test_names_never_become_paths(store: ArtifactStore, name: str) -> None:
    """A display name is sanitized to one safe component and never addresses content."""
    made = store.put(b"content", name=name)
    assert made.name is not None
    assert "/" not in made.name
    assert "\\" not in made.name
    assert "\x00" not in made.name
    assert made.id == sha(b"content")
    assert list(store.ids()) == [made.id]


def test_delete(store: ArtifactStore) -> None:
    """Delete removes content and says so; deleting again says nothing was there."""
    kept = store.put(b"kept")
    gone = store.put(b"gone")
    assert store.delete(gone.id) is True
    assert not store.exists(gone.id)
    assert store.delete(gone.id) is False
    assert list(store.ids()) == [kept.id]
    with pytest.raises(ArtifactNotFound):
        store.get(gone.id)
    again = store.put(b"gone")
    assert store.get(again.id) == b"gone"


def test_missing_artifact_raises_not_found(store: ArtifactStore) -> None:
    """get, size and verify of an absent id raise ArtifactNotFound (also a KeyError)."""
    missing = sha(b"never stored")
    for call in (store.get, store.size, store.verify):
        with pytest.raises(ArtifactNotFound, match=missing) as caught:
            call(missing)
        assert isinstance(caught.value, KeyError)
    with pytest.raises(ArtifactNotFound):
        store.get(missing, verify=True)


def test_verify_accepts_intact_content(store: ArtifactStore) -> None:
    """Verify and get(verify=True) pass for intact content."""
    made = store.put(b"intact")
    store.verify(made.id)
    assert store.get(made.id, verify=True) == b"intact"


BAD_IDS = [
    "../x",
    "../" + "a" * 61,
    "/etc/passwd",
    "/" + "a" * 63,
    "a" * 63,
    "a" * 65,
    "A" * 64,
    "g" * 64,
    "a" * 63 + "\x00",
    "a" * 32 + "/" + "a" * 31,
    "",
    " " + "a" * 63,
]


@pytest.mark.parametrize("bad", BAD_IDS, ids=range(len(BAD_IDS)))
def test_invalid_ids_are_refused_before_touching_anything(store: ArtifactStore, bad: str) -> None:
    """Every method refuses an id that is not 64 lowercase hex characters, changing nothing."""
    kept = store.put(b"kept")
    calls: list[Callable[[str], object]] = [
        store.get,
        store.exists,
        store.verify,
        store.delete,
        store.size,
        lambda artifact_id: store.get(artifact_id, verify=True),
    ]
    for call in calls:
        with pytest.raises(InvalidArtifactId, match="64 lowercase"):
            call(bad)
    assert list(store.ids()) == [kept.id]
    assert store.get(kept.id) == b"kept"


def test_non_string_id_is_refused(store: ArtifactStore) -> None:
    """An id that is not a string raises InvalidArtifactId, not a TypeError from deep inside."""
    with pytest.raises(InvalidArtifactId):
        store.get(123)  # type: ignore[arg-type]


def test_large_content(store: ArtifactStore) -> None:
    """Several megabytes are stored and read back exactly."""
    data = bytes(range(256)) * (4 * 4096)
    made = store.put(data)
    assert store.size(made.id) == len(data)
    assert store.get(made.id, verify=True) == data


@pytest.fixture
def corrupt(request: pytest.FixtureRequest) -> Corruptor:
    """The damage hook of the store under test (see CORRUPTORS)."""
    adapter = request.node.callspec.params["store"]
    if adapter not in CORRUPTORS:
        pytest.fail(f"add a corruptor for artifact store {adapter!r} to CORRUPTORS")
    return CORRUPTORS[adapter]


def test_damage_is_detected(store: ArtifactStore, corrupt: Corruptor) -> None:
    """Content that no longer matches its id fails verify and get(verify=True)."""
    made = store.put(b"original content")
    corrupt(store, made.id, b"tampered content")
    with pytest.raises(IntegrityError, match=made.id):
        store.verify(made.id)
    with pytest.raises(IntegrityError):
        store.get(made.id, verify=True)


def test_damage_is_not_checked_unless_asked(store: ArtifactStore, corrupt: Corruptor) -> None:
    """A plain get returns stored bytes without hashing them: verification is opt-in."""
    made = store.put(b"original content")
    corrupt(store, made.id, b"tampered content")
    assert store.get(made.id) == b"tampered content"
    assert store.exists(made.id)
