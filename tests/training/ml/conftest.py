"""Fixtures for the ML package: few threads, and tiny generated image sets (coloured blobs per class)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.training.ml.blobs import write_blob_folder


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    # Tiny models on a shared 2-core machine: more threads only add synchronisation overhead.
    previous = torch.get_num_threads()
    torch.set_num_threads(min(2, previous))
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def blob_folder(tmp_path: Path) -> Path:
    return write_blob_folder(tmp_path / "blobs")


@pytest.fixture
def tiny_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Four batches of random uint8 32 px images with labels in 0..2, a stand-in for a training DataLoader."""
    generator = torch.Generator().manual_seed(0)
    return [
        (torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=generator), torch.tensor([0, 1, 2, 0]))
        for _ in range(4)
    ]
