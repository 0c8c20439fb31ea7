"""The seed page "Patch-based inference" runs as written with ``import voxelflow as tio``."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def test_dense_inference_with_grid_sampler(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    volume = np.random.default_rng(0).random((80, 70, 66)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, np.diag([1.0, 1.0, 1.2, 1.0])), "brain.nii.gz")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(1, 3, 3, padding=1), nn.Softmax(dim=1)).eval()

    # ---- the seed page's code, with torchio -> voxelflow -------------------------------
    import voxelflow as tio
    from voxelflow.loader import SubjectsLoader

    subject = tio.ScalarImage("brain.nii.gz")
    subject = tio.Subject(t1=subject)

    # 1. Sample patches
    sampler = tio.GridSampler(subject, patch_size=64, patch_overlap=8)

    # 2. Batch with DataLoader
    loader = SubjectsLoader(sampler, batch_size=4)

    # 3. Run inference and aggregate
    aggregator = tio.PatchAggregator(
        spatial_shape=subject.spatial_shape,
        overlap_mode="hann",
        patch_overlap=8,
    )

    with torch.no_grad():
        for batch in loader:
            input_tensor = batch.t1.data
            output = model(input_tensor)
            locations = [batch.metadata["patch_location"][i] for i in range(batch.batch_size)]
            aggregator.add_batch(output, locations)

    result = aggregator.get_output()
    # ------------------------------------------------------------------------------------

    assert not subject.t1.is_loaded  # patches were read region by region
    assert result.shape == (3, 80, 70, 66)
    with torch.no_grad():
        full = model(torch.from_numpy(volume)[None, None])[0]
    # a softmax sums to one in every voxel, blended or not
    torch.testing.assert_close(result.sum(0), torch.ones(80, 70, 66), rtol=0, atol=1e-5)
    # a 3×3×3 convolution is exact in a patch except on its faces inside the volume: where no
    # covering patch has a face, the blend equals the full pass
    inexact = np.zeros(volume.shape, dtype=bool)
    for location in sampler.locations:
        face = np.zeros(volume.shape, dtype=bool)
        face[location.to_slices()] = True
        inner = []
        for i, f, n in zip(location.index_ini, location.index_fin, volume.shape, strict=True):
            inner.append(slice(i + (i > 0), f - (f < n)))
        face[tuple(inner)] = False
        inexact |= face
    exact = torch.from_numpy(~inexact)
    assert 0.9 < exact.float().mean() < 1
    torch.testing.assert_close(result[:, exact], full[:, exact], rtol=0, atol=1e-5)
    assert (result[:, ~exact] - full[:, ~exact]).abs().max() > 1e-4  # the check can fail


def test_downsampled_and_multiple_outputs():
    import voxelflow as tio

    image = torch.rand(1, 64, 64, 48, generator=torch.Generator().manual_seed(0))
    subject = tio.Subject(t1=tio.ScalarImage(image))
    sampler = tio.GridSampler(subject, patch_size=32, patch_overlap=8)

    # Downsampled outputs (the page's example, on a smaller volume)
    aggregator = tio.PatchAggregator(
        spatial_shape=(64, 64, 48),
        output_shape=(32, 32, 24),
        overlap_mode="average",
    )
    for n in range(len(sampler)):
        patch = sampler[n]
        aggregator.add_batch(F.avg_pool3d(patch.t1.data[None], 2), [patch["patch_location"]])
    expected = F.avg_pool3d(image[None], 2)[0]
    torch.testing.assert_close(aggregator.get_output(), expected, rtol=0, atol=1e-6)

    # Multiple outputs
    aggregator = tio.PatchAggregator(
        spatial_shape=(64, 64, 48), overlap_mode="hann", patch_overlap=8
    )
    for n in range(len(sampler)):
        patch = sampler[n]
        locations = [patch["patch_location"]]
        x = patch.t1.data[None]
        seg_output, emb_output = torch.cat([x, 1 - x], 1), 10 * x
        aggregator.add_batch(
            {"segmentation": seg_output, "embedding": emb_output},
            locations,
        )
    seg = aggregator.get_output("segmentation")
    emb = aggregator.get_output("embedding")
    torch.testing.assert_close(seg, torch.cat([image, 1 - image]), rtol=0, atol=1e-6)
    torch.testing.assert_close(emb, 10 * image, rtol=1e-6, atol=1e-5)
