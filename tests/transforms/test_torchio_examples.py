"""TorchIO 2.0's documented calls of the intensity, label and composition transforms run
unchanged (from its docstrings and its augmentation tutorial), on a subject with a brain
mask and a segmentation."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import LogNormal

import voxelflow as tio


@pytest.fixture
def subject() -> tio.Subject:
    generator = torch.Generator().manual_seed(0)
    t1 = torch.rand(1, 24, 20, 16, generator=generator) * 100
    seg = torch.zeros(1, 24, 20, 16, dtype=torch.int64)
    seg[0, 4:12, 4:12, 4:12], seg[0, 14:20, 8:16, 2:8], seg[0, 20:22, 2:4, 2:4] = 1, 2, 1
    return tio.Subject(t1=tio.ScalarImage(t1), brain=tio.LabelMap(seg > 0), seg=tio.LabelMap(seg))


DOCUMENTED = [
    tio.Noise(std=0.1),
    tio.Noise(std=0.1, rician=True),
    tio.Noise(std=(0.05, 0.2)),
    tio.Noise(std=LogNormal(loc=-2, scale=0.5)),
    tio.Gamma(log_gamma=0.5),
    tio.Gamma(log_gamma=(-0.3, 0.3)),
    tio.Blur(std=2.0),
    tio.Blur(std=(0, 4)),
    tio.BiasField(),
    tio.BiasField(std=0.8),
    tio.BiasField(std=(0.0, 1.0)),
    tio.BiasField(coefficients=0.5),
    tio.Normalize(),
    tio.Normalize(out_min=0.0, out_max=1.0, in_min=-1000.0, in_max=1000.0),
    tio.Normalize(percentile_low=0.5, percentile_high=99.5),
    tio.Normalize(out_min=(-1.0, 0.0), out_max=(0.5, 1.0)),
    tio.Standardize(),
    tio.Standardize(masking_method="brain"),
    tio.Standardize(masking_method=lambda x: x > x.mean()),
    tio.Mask(masking_method="brain"),
    tio.Mask(masking_method=lambda x: x > 0),
    tio.Mask(masking_method="seg", labels=[1, 2]),
    tio.HistogramStandardization(torch.linspace(0, 100, 13)),
    tio.Spike(intensity=2.0),
    tio.Spike(num_spikes=3, intensity=2.0),
    tio.Ghosting(intensity=0.8),
    tio.Ghosting(num_ghosts=6, intensity=0.8),
    tio.Motion(),
    tio.Motion(degrees=15, translation=10, num_transforms=4),
    tio.OneHot(),
    tio.OneHot(num_classes=5),
    tio.RemapLabels({2: 1, 3: 1}),
    tio.RemapLabels({1: 2, 2: 1}),
    tio.RemoveLabels([3, 4, 5]),
    tio.RemoveLabels([2], background_label=0),
    tio.SequentialLabels(),
    tio.KeepLargestComponent(),
    tio.KeepLargestComponent(labels=[1, 2]),
    tio.OneOf({tio.Noise(std=0.1): 0.7, tio.Flip(axes=(0,)): 0.3}),
    tio.SomeOf([tio.Noise(), tio.Flip(), tio.Noise(std=0.5)], num_transforms=2),
]


@pytest.mark.parametrize("transform", DOCUMENTED, ids=repr)
def test_documented_call_runs(transform: tio.Transform, subject: tio.Subject) -> None:
    out = transform(subject)
    for name in ("t1", "brain", "seg"):
        data = out[name].data
        assert data.shape[1:] == subject.spatial_shape and torch.isfinite(data.float()).all()
    assert out.applied_transforms  # recorded


def test_augmentation_tutorial_pipeline(subject: tio.Subject) -> None:
    preprocessing = tio.Compose([tio.Normalize(out_min=-1, out_max=1)])
    augmentation = tio.Compose(
        [
            tio.Flip(axes=(0, 1, 2)),
            tio.OneOf(
                {
                    tio.Noise(std=(0.01, 0.1)): 0.5,
                    tio.Blur(std=(0.5, 2.0)): 0.3,
                    tio.BiasField(coefficients=0.5): 0.2,
                }
            ),
            tio.Gamma(log_gamma=(-0.3, 0.3), p=0.5),
        ]
    )
    full_pipeline = preprocessing + augmentation
    out = full_pipeline(subject)
    assert out.t1.shape == subject.t1.shape
    label_pipeline = tio.Compose(
        [tio.SequentialLabels(), tio.RemoveLabels([4, 5]), tio.KeepLargestComponent(labels=[1])]
    )
    labels = label_pipeline(subject).seg.data
    assert set(labels.unique().tolist()) <= {0, 1, 2}
    assert int((labels == 1).sum()) == 8 * 8 * 8  # the small component of label 1 is gone
