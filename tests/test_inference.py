"""``voxelflow.inference.sliding_window``: one call for patch-based inference."""

from __future__ import annotations

import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

import voxelflow as tio
from voxelflow.inference import plan_grid, sliding_window
from voxelflow.loader import SubjectsLoader


def net(out_channels: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, out_channels, 1))


def by_hand(model, image, patch, overlap, mode, padding_mode=None) -> torch.Tensor:
    subject = tio.Subject(t1=image)
    sampler = tio.GridSampler(subject, patch, overlap, padding_mode=padding_mode)
    aggregator = tio.PatchAggregator.from_sampler(sampler, overlap_mode=mode)
    with torch.no_grad():
        for batch in SubjectsLoader(sampler, batch_size=3):
            aggregator.add_batch(model(batch.t1.data.float()), batch)
    return aggregator.get_output()


@pytest.fixture
def volume_path(tmp_path: Path) -> Path:
    data = np.random.default_rng(0).random((30, 26, 34), dtype=np.float32)
    path = tmp_path / "t1.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([1.5, 1.5, 2.0, 1.0])), path)
    return path


@pytest.mark.parametrize("mode", ["crop", "average", "hann", "gaussian"])
@pytest.mark.parametrize("padding_mode", [None, "edge"])
def test_equals_the_loop_by_hand(volume_path: Path, mode: str, padding_mode) -> None:
    model = net().eval()
    image = tio.ScalarImage(volume_path)
    result = sliding_window(
        model,
        image,
        (12, 10, 14),
        (4, 2, 6),
        mode,
        batch_size=5,
        progress=False,
        padding_mode=padding_mode,
    )
    expected = by_hand(
        model, tio.ScalarImage(volume_path), (12, 10, 14), (4, 2, 6), mode, padding_mode
    )
    assert isinstance(result, tio.ScalarImage) and result.shape == (2, 30, 26, 34)
    torch.testing.assert_close(result.data, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.affine, image.affine)
    assert not image.is_loaded  # the caller's image stays lazy


def test_a_stream_is_decoded_once(volume_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image = tio.ScalarImage(volume_path)
    backend = type(image.dataobj)
    reads: list[object] = []
    original = backend.read

    def counting(self, box=None):  # type: ignore[no-untyped-def]
        reads.append(box)
        return original(self, box)

    monkeypatch.setattr(backend, "read", counting)
    sliding_window(nn.Identity(), image, 8, 2, "average", progress=False)
    assert reads == [None]  # one whole read, no region reads


def test_region_reads_for_proportional_sources(tmp_path: Path, monkeypatch) -> None:
    data = np.random.default_rng(1).random((20, 20, 20), dtype=np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "t1.nii")
    image = tio.ScalarImage(tmp_path / "t1.nii")
    backend = type(image.dataobj)
    boxes: list[object] = []
    original = backend.read_into  # the contract's region read (read is allocate + read_into)

    def counting(self, box, out):  # type: ignore[no-untyped-def]
        boxes.append(box)
        return original(self, box, out)

    monkeypatch.setattr(backend, "read_into", counting)
    out = sliding_window(nn.Identity(), image, 10, 0, "average", progress=False)
    assert None not in boxes and len(boxes) == 8
    torch.testing.assert_close(out.data, torch.from_numpy(data)[None])


def test_argmax_reduction_and_on_disk(volume_path: Path, tmp_path: Path) -> None:
    model = net(5).eval()
    image = tio.ScalarImage(volume_path)
    full = by_hand(model, tio.ScalarImage(volume_path), 12, 4, "gaussian")
    labels = sliding_window(model, image, 12, 4, "gaussian", reduce="argmax", progress=False)
    assert isinstance(labels, tio.LabelMap) and labels.dtype == torch.uint8
    assert torch.equal(labels.data.long(), full.argmax(0, keepdim=True))
    path = tmp_path / "prob.nii.zarr"
    on_disk = sliding_window(model, image, 12, 4, "gaussian", on_disk=path, progress=False)
    assert path.is_dir() and not on_disk.is_loaded
    torch.testing.assert_close(on_disk.data, full, rtol=1e-5, atol=1e-6)


def test_flip_tta_averages_the_flipped_passes(volume_path: Path) -> None:
    model = net().eval()
    image = tio.ScalarImage(volume_path)
    plain = sliding_window(model, image, 10, 2, "hann", progress=False).data
    tta = sliding_window(model, image, 10, 2, "hann", flip_tta_axes=[0], progress=False).data
    subject = tio.Subject(t1=image)
    sampler = tio.GridSampler(subject, 10, 2)
    aggregator = tio.PatchAggregator.from_sampler(sampler, overlap_mode="hann")
    with torch.no_grad():
        for batch in SubjectsLoader(sampler, batch_size=4):
            x = batch.t1.data
            y = (model(x) + model(x.flip(2)).flip(2)) / 2
            aggregator.add_batch(y, batch)
    torch.testing.assert_close(tta, aggregator.get_output(), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(tta, plain)


def test_amp_on_the_cpu_uses_bfloat16(volume_path: Path) -> None:
    seen: list[torch.dtype] = []

    class Probe(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = nn.functional.conv3d(x, torch.ones(1, 1, 1, 1, 1))
            seen.append(y.dtype)
            return y

    out = sliding_window(Probe(), tio.ScalarImage(volume_path), 10, 2, amp=True, progress=False)
    assert seen and set(seen) == {torch.bfloat16}
    torch.testing.assert_close(out.data, tio.ScalarImage(volume_path).data, rtol=1e-2, atol=1e-2)


def test_subjects_and_named_images(volume_path: Path) -> None:
    subject = tio.Subject(t1=tio.ScalarImage(volume_path), seg=tio.LabelMap(volume_path))
    out = sliding_window(nn.Identity(), subject, 10, 2, "average", progress=False)
    torch.testing.assert_close(out.data, subject.t1.data)
    two = tio.Subject(a=tio.ScalarImage(volume_path), b=tio.ScalarImage(volume_path))
    with pytest.raises(ValueError, match="image_name"):
        sliding_window(nn.Identity(), two, 10, 2, progress=False)
    assert sliding_window(nn.Identity(), two, 10, 2, progress=False, image_name="b").shape[0] == 1


def test_model_errors_name_the_input_and_stop_every_thread(volume_path: Path) -> None:
    calls = []

    def broken(x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("CUDA out of memory")
        return x

    before = threading.active_count()
    with pytest.raises(RuntimeError, match=r"t1\.nii\.gz: the model failed.*out of memory"):
        sliding_window(broken, tio.ScalarImage(volume_path), 8, 2, batch_size=2, progress=False)
    assert threading.active_count() == before


def test_reader_errors_reach_the_caller(tmp_path: Path) -> None:
    path = tmp_path / "cut.nii.gz"
    data = np.random.default_rng(2).random((20, 20, 20), dtype=np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    image = tio.ScalarImage(path)  # header read now
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])  # truncated under the open image
    before = threading.active_count()
    with pytest.raises(ValueError, match="cut.nii.gz"):
        sliding_window(nn.Identity(), image, 8, 2, progress=False)
    assert threading.active_count() == before


def test_bad_arguments() -> None:
    image = tio.ScalarImage(torch.rand(1, 16, 16, 16))
    for kwargs, match in (
        ({"patch_size": 16.5}, "int or three ints"),
        ({"patch_size": 8, "overlap": 8}, "smaller than patch_size"),
        ({"patch_size": 32}, "does not fit"),
        ({"patch_size": 8, "batch_size": 0}, "batch_size"),
        ({"patch_size": 8, "flip_tta_axes": [3]}, "flip_tta_axes"),
        ({"patch_size": 8, "mode": "median"}, "overlap_mode"),
    ):
        with pytest.raises((TypeError, ValueError), match=match):
            sliding_window(nn.Identity(), image, progress=False, **kwargs)  # type: ignore[arg-type]


def test_plan_grid_restricted_to_a_region() -> None:
    whole = plan_grid((40, 30, 50), 16, 4)
    region = (slice(0, 40), slice(0, 30), slice(20, 30))
    part = plan_grid((40, 30, 50), 16, 4, region=region)
    expected = [loc for loc in whole.locations if loc.index_ini[2] < 30 and loc.index_fin[2] > 20]
    assert list(part.locations) == expected and 0 < len(part.locations) < len(whole.locations)
