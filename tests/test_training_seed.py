"""The training code of the seed pages (patch-based training; random samplers) runs as
written with ``import voxelflow as tio`` and ``from voxelflow.loader import SubjectsLoader``.

The pages leave ``training_paths``, ``model``, ``criterion``, ``targets`` and
``num_epochs`` to the reader; the fixtures below provide small ones.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

SHAPE = (72, 70, 68)


@pytest.fixture
def training_paths(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for n in range(3):
        path = tmp_path / f"t1_{n}.nii"
        nib.save(nib.Nifti1Image(rng.normal(size=SHAPE).astype(np.float32), np.eye(4)), path)
        paths.append(path)
    return paths


class _Scale(torch.nn.Module):
    """A one-parameter model (a convolution would dominate the test's time on a CPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


def _model_and_loss() -> tuple[torch.nn.Module, torch.nn.Module]:
    return _Scale(), torch.nn.MSELoss()


def test_patch_based_training_page(training_paths: list[Path]) -> None:
    model, criterion = _model_and_loss()
    num_epochs = 2
    seen = []
    # ---- the page's code, as written (TorchIO → voxelflow)
    import voxelflow as tio
    from voxelflow.loader import SubjectsLoader

    subjects = [tio.Subject(t1=tio.ScalarImage(path)) for path in training_paths]
    transform = tio.Compose(
        [
            tio.Flip(axes=(0,), p=0.5),
            tio.Noise(std=0.1),
        ]
    )
    sampler = tio.UniformSampler(subjects[0], patch_size=64)
    queue = tio.Queue(
        subjects,
        patch_sampler=sampler,
        max_length=300,
        patches_per_volume=10,
        num_workers=4,
        transform=transform,
    )
    loader = SubjectsLoader(queue, batch_size=16)
    for _epoch in range(num_epochs):
        for batch in loader:
            inputs = batch.t1.data
            outputs = model(inputs)
            targets = torch.zeros_like(outputs)
            loss = criterion(outputs, targets)
            loss.backward()
            seen.append(batch.batch_size)
    # ---- distributed variant of the page (one process: rank 0 of 1)
    from torch.utils.data.distributed import DistributedSampler

    subject_sampler = DistributedSampler(subjects, shuffle=True, num_replicas=1, rank=0)
    queue = tio.Queue(
        subjects,
        patch_sampler=sampler,
        subject_sampler=subject_sampler,
        shuffle_subjects=False,  # sampler controls order
    )
    for epoch in range(num_epochs):
        subject_sampler.set_epoch(epoch)
        assert sum(batch.batch_size for batch in SubjectsLoader(queue, batch_size=16)) == 30
    assert seen == [16, 14] * num_epochs
    assert tuple(inputs.shape) == (14, 1, 64, 64, 64)
    assert model.weight.grad is not None and torch.isfinite(model.weight.grad).all()
    assert not subjects[0].t1.is_loaded  # the queue read patches only
    assert queue.max_memory_pretty == "300.0 MiB"  # 300 patches of 64³ float32


def test_random_samplers_page(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    seg = np.zeros(SHAPE, dtype=np.uint8)
    seg[40:44, 30:33, 34] = 1  # 12 voxels of label 1
    weights = np.zeros(SHAPE, dtype=np.float32)
    weights[36, 35, 30:40] = 1
    for name, array in (
        ("t1", rng.normal(size=SHAPE).astype(np.float32)),
        ("seg", seg),
        ("w", weights),
    ):
        nib.save(nib.Nifti1Image(array, np.eye(4)), tmp_path / f"{name}.nii")
    model, criterion = _model_and_loss()
    # ---- the page's code, as written (TorchIO → voxelflow)
    import voxelflow as tio
    from voxelflow.loader import SubjectsLoader

    subject = tio.Subject(
        t1=tio.ScalarImage(tmp_path / "t1.nii"),
        seg=tio.LabelMap(tmp_path / "seg.nii"),
        sampling_weights=tio.ScalarImage(tmp_path / "w.nii"),
    )
    sampler = tio.UniformSampler(subject, patch_size=64, num_patches=200)
    loader = SubjectsLoader(sampler, batch_size=8)

    batches = 0
    for batch in loader:
        output = model(batch.t1.data)
        loss = criterion(output, batch.seg.data.float())
        loss.backward()
        batches += 1
    assert batches == 25

    sampler = tio.WeightedSampler(
        subject,
        patch_size=64,
        probability_map="sampling_weights",
        num_patches=200,
    )
    centres = [p["patch_location"].index for p in sampler]
    assert len(centres) == 200
    assert {(i + 32, j + 32) for i, j, _ in centres} == {(36, 35)}  # only weighted voxels

    sampler = tio.LabelSampler(
        subject,
        patch_size=64,
        label_name="seg",
        label_probabilities={0: 0.5, 1: 0.5},
        num_patches=200,
    )
    on_label = [p.seg.data[0, 32, 32, 32].item() == 1 for p in sampler]
    assert 70 < sum(on_label) < 130  # half the centres on the 12 voxels of label 1
    assert not subject.t1.is_loaded
