"""A worker keeps the index it loaded last: a second load with the same shard rows reads nothing from storage, a
grown or rewritten shard set is read again, and only one space is held at a time."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from inference.models import EmbeddingShard, EmbeddingSpace
from inference.services import index as index_service
from inference.services.index import index_cache_clear, index_load
from training.ml.embedding import shard_bytes

pytestmark = pytest.mark.django_db

DIM = 8


class CountingStorage:
    """default_storage as index_load sees it, counting the files it opens."""

    def __init__(self, storage) -> None:
        self.storage = storage
        self.opened: list[str] = []

    def open(self, name, mode="rb"):
        self.opened.append(name)
        return self.storage.open(name, mode)

    def __getattr__(self, name):
        return getattr(self.storage, name)


@pytest.fixture
def storage(media, monkeypatch):
    counting = CountingStorage(default_storage)
    monkeypatch.setattr(index_service, "default_storage", counting)
    index_cache_clear()
    yield counting
    index_cache_clear()


def _space(key: str) -> EmbeddingSpace:
    return EmbeddingSpace.objects.create(key=key, backbone={"name": key}, dim=DIM)


def _vectors(ids, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(len(ids), DIM)).astype(np.float16)


def _shard(space: EmbeddingSpace, ids: list[int], *, seed: int = 0) -> EmbeddingShard:
    content = shard_bytes(ids, _vectors(ids, seed))
    name = default_storage.save(f"index/{space.pk}/test-{ids[0]}-{ids[-1]}.npz", ContentFile(content))
    return EmbeddingShard.objects.create(
        space=space, file=name, count=len(ids), sha256=hashlib.sha256(content).hexdigest()
    )


def test_a_second_load_reads_nothing_and_a_grown_index_is_read_again(storage):
    space = _space("cache-a")
    _shard(space, [1, 2, 3], seed=1)
    _shard(space, [4, 5], seed=2)
    ids, matrix = index_load(space=space)
    assert list(ids) == [1, 2, 3, 4, 5]
    assert len(storage.opened) == 2

    again_ids, again = index_load(space=space)
    assert len(storage.opened) == 2  # no shard read from storage
    assert again is matrix
    assert np.array_equal(again_ids, ids)
    # Every caller shares the arrays: nobody may change them in place.
    assert not matrix.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        matrix[0, 0] = 1

    _shard(space, [6, 7], seed=3)  # an import grew the index
    grown_ids, grown = index_load(space=space)
    assert list(grown_ids) == [1, 2, 3, 4, 5, 6, 7]
    assert len(storage.opened) == 5  # all three shards read again
    assert np.array_equal(grown[:5], matrix)
    assert np.array_equal(grown[5:], _vectors([6, 7], 3))


def test_a_rewritten_shard_is_read_again(storage):
    space = _space("cache-b")
    shard = _shard(space, [1, 2], seed=1)
    _, before = index_load(space=space)
    # The same row now names other bytes (a re-embedding): its checksum changes, and so does the key.
    content = shard_bytes([1, 2], _vectors([1, 2], 9))
    shard.file = default_storage.save(f"index/{space.pk}/rewritten.npz", ContentFile(content))
    shard.sha256 = hashlib.sha256(content).hexdigest()
    shard.save()
    _, after = index_load(space=space)
    assert len(storage.opened) == 2
    assert np.array_equal(after, _vectors([1, 2], 9))
    assert not np.array_equal(after, before)


def test_one_space_at_a_time(storage):
    first, second = _space("cache-c"), _space("cache-d")
    _shard(first, [1, 2], seed=1)
    _shard(second, [3, 4], seed=2)
    index_load(space=first)
    index_load(space=second)
    assert len(storage.opened) == 2
    index_load(space=second)
    assert len(storage.opened) == 2
    index_load(space=first)  # the second space replaced it
    assert len(storage.opened) == 3
