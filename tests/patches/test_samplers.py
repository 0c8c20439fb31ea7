"""Random samplers: reachability, distributions, big volumes, tables, validation, laziness."""

from __future__ import annotations

import itertools
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import voxelflow as tio
from voxelflow.loader import SubjectsLoader
from voxelflow.patches import label as label_module
from voxelflow.patches.random_sampling import centre_bounds


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _subject(shape: tuple[int, int, int], **extra: tio.Image) -> tio.Subject:
    return tio.Subject(t1=tio.ScalarImage(torch.rand(1, *shape)), **extra)


def _chi_square(observed: np.ndarray, expected_fraction: np.ndarray) -> float:
    expected = expected_fraction / expected_fraction.sum() * observed.sum()
    return float(((observed - expected) ** 2 / expected).sum())


# Critical values of chi-square at p = 0.001 (so a correct sampler fails 1 run in 1000
# at most; the seeds are fixed, so the tests are deterministic anyway).
CHI2_999 = {1: 10.83, 2: 13.82, 3: 16.27, 7: 24.32}


# ------------------------------------------------------------------ corners
SHAPES_AND_PATCHES = [
    ((5, 6, 4), (2, 3, 4)),  # even, odd, patch == image
    ((7, 4, 9), (4, 4, 1)),  # even patch == even image
    ((6, 6, 6), (5, 2, 3)),
    ((3, 3, 3), (3, 3, 3)),  # one corner only
]


def _all_corners(shape: tuple[int, ...], patch: tuple[int, ...]) -> set[tuple[int, ...]]:
    return set(itertools.product(*[range(s - p + 1) for s, p in zip(shape, patch, strict=True)]))


@pytest.mark.parametrize(("shape", "patch"), SHAPES_AND_PATCHES)
def test_every_valid_corner_reachable(
    shape: tuple[int, int, int], patch: tuple[int, int, int]
) -> None:
    ones = torch.ones(1, *shape)
    subject = _subject(shape, w=tio.ScalarImage(ones), seg=tio.LabelMap(ones.to(torch.uint8)))
    expected = _all_corners(shape, patch)
    samplers = [
        tio.UniformSampler(patch_size=patch),
        tio.WeightedSampler(patch_size=patch, probability_map="w"),
        tio.LabelSampler(patch_size=patch, label_name="seg"),
    ]
    for sampler in samplers:
        locations = sampler.sample_locations(subject, 60 * len(expected), _gen(1))
        corners = {location.index for location in locations}
        assert corners == expected, type(sampler).__name__
        assert all(location.size == patch for location in locations)


def test_uniform_corners_equally_likely() -> None:
    subject = _subject((6, 5, 4))
    locations = tio.UniformSampler(patch_size=(3, 2, 4)).sample_locations(subject, 12000, _gen(2))
    counts = np.zeros((4, 4))
    for location in locations:
        counts[location.index[0], location.index[1]] += 1
    assert _chi_square(counts.ravel(), np.ones(16)) < 37.7  # df 15, p = 0.001


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5])
def test_centre_convention(size: int) -> None:
    """The weighted voxel is the patch's voxel ``size // 2``: corner = centre - size // 2."""
    weights = torch.zeros(1, 11, 11, 11)
    weights[0, 5, 6, 7] = 3.0
    subject = _subject((11, 11, 11), w=tio.ScalarImage(weights))
    sampler = tio.WeightedSampler(patch_size=size, probability_map="w")
    (location,) = set(sampler.sample_locations(subject, 20, _gen()))
    half = size // 2
    assert location.index == (5 - half, 6 - half, 7 - half)
    patch = sampler.extract(subject, location)
    assert patch["w"].data[0, half, half, half] == 3.0


def test_centre_bounds_match_corners() -> None:
    first, count = centre_bounds((10, 9, 8), (4, 3, 8), padded=False)
    assert first == (2, 1, 4) and count == (7, 7, 1)
    assert centre_bounds((10, 9, 8), (4, 3, 8), padded=True) == ((0, 0, 0), (10, 9, 8))


# ------------------------------------------------------------------ distributions
def test_weighted_sampler_follows_its_map() -> None:
    """Four slabs of weights 1:2:3:4 (spanning several 16³ blocks) get centres in that ratio,
    and within a slab the centres spread uniformly."""
    shape = (40, 36, 34)
    weights = torch.zeros(1, *shape, dtype=torch.float64)
    for n in range(4):
        weights[0, 10 * n : 10 * (n + 1)] = n + 1
    subject = _subject(shape, w=tio.ScalarImage(weights))
    patch = (1, 5, 5)
    sampler = tio.WeightedSampler(patch_size=patch, probability_map="w")
    locations = sampler.sample_locations(subject, 20000, _gen(3))
    centres = np.asarray([loc.index for loc in locations]) + np.asarray(patch) // 2
    slabs = np.bincount(centres[:, 0] // 10, minlength=4)
    assert _chi_square(slabs, np.asarray([1.0, 2, 3, 4])) < CHI2_999[3]
    # within slab 3: j and k split in two halves of the valid range, equally likely
    inside = centres[centres[:, 0] // 10 == 3]
    halves = np.bincount((inside[:, 1] >= 18).astype(int) * 2 + (inside[:, 2] >= 17), minlength=4)
    expected = np.asarray([16 * 15, 16 * 15, 16 * 15, 16 * 15], dtype=float)  # j 2..33, k 2..31
    assert _chi_square(halves, expected) < CHI2_999[3]
    assert (
        np.all(centres[:, 1:] >= 2) and np.all(centres[:, 1] <= 33) and np.all(centres[:, 2] <= 31)
    )


def test_weighted_sampler_random_map_matches_voxel_probabilities() -> None:
    rng = np.random.default_rng(0)
    weights = rng.gamma(0.5, size=(1, 18, 17, 3))
    subject = _subject((18, 17, 3), w=tio.ScalarImage(torch.from_numpy(weights)))
    locations = tio.WeightedSampler(patch_size=(1, 1, 3), probability_map="w").sample_locations(
        subject, 40000, _gen(4)
    )
    # group voxels into 8 bins of equal expected mass and compare counts
    centres = np.asarray([loc.index for loc in locations]) + np.asarray([0, 0, 1])
    flat = weights[0, :, :, 1].ravel()
    order = np.argsort(flat)
    bins = np.empty(flat.size, dtype=int)
    bins[order] = np.minimum((np.cumsum(flat[order]) / flat.sum() * 8).astype(int), 7)
    index = centres[:, 0] * 17 + centres[:, 1]
    observed = np.bincount(bins[index], minlength=8)
    expected = np.bincount(bins, weights=flat, minlength=8)
    assert _chi_square(observed, expected) < CHI2_999[7]


def test_label_probabilities_are_class_probabilities() -> None:
    """{0: 0.5, 1: 0.5}: half the centres on label 1 even though it is 2 voxels of 64000."""
    seg = torch.zeros(1, 40, 40, 40, dtype=torch.uint8)
    seg[0, 20, 20, 20] = seg[0, 5, 30, 11] = 1
    subject = _subject((40, 40, 40), seg=tio.LabelMap(seg))
    sampler = tio.LabelSampler(patch_size=4, label_name="seg", label_probabilities={0: 0.5, 1: 0.5})
    locations = sampler.sample_locations(subject, 4000, _gen(5))
    centres = np.asarray([loc.index for loc in locations]) + 2
    on_one = seg[0][tuple(centres.T)].numpy() == 1
    assert _chi_square(np.bincount(on_one, minlength=2), np.asarray([1.0, 1.0])) < CHI2_999[1]
    # both voxels of label 1 are used, about equally
    hits = {tuple(c) for c in centres[on_one]}
    assert hits == {(20, 20, 20), (5, 30, 11)}


def test_label_sampler_three_classes_and_absent_class() -> None:
    seg = torch.zeros(1, 30, 20, 20, dtype=torch.int16)
    seg[0, 10:20] = 1
    seg[0, 20:, 5:8, 5:8] = 2
    subject = _subject((30, 20, 20), seg=tio.LabelMap(seg))
    probabilities = {0: 0.2, 1: 0.3, 2: 0.5, 7: 1.0}  # 7 is absent: skipped, others renormalised
    sampler = tio.LabelSampler(patch_size=3, label_name="seg", label_probabilities=probabilities)
    locations = sampler.sample_locations(subject, 6000, _gen(6))
    centres = np.asarray([loc.index for loc in locations]) + 1
    classes = seg[0][tuple(centres.T)].numpy()
    assert _chi_square(np.bincount(classes, minlength=3), np.asarray([0.2, 0.3, 0.5])) < CHI2_999[2]


def test_label_sampler_default_is_foreground_and_one_hot_works() -> None:
    seg = torch.zeros(3, 24, 24, 24, dtype=torch.uint8)  # one-hot: background, 1, 2
    seg[0] = 1
    seg[1, 10:12, 10:12, 10:12] = 1
    seg[2, 3:5, 15:20, 6:9] = 1
    seg[0][(seg[1] + seg[2]) > 0] = 0
    subject = _subject((24, 24, 24), seg=tio.LabelMap(seg))
    sampler = tio.LabelSampler(patch_size=5, label_name="seg", label_probabilities={1: 1, 2: 3})
    centres = (
        np.asarray([loc.index for loc in sampler.sample_locations(subject, 4000, _gen(7))]) + 2
    )
    on = [seg[c][tuple(centres.T)].numpy().astype(bool) for c in (1, 2)]
    assert np.all(on[0] | on[1])
    assert _chi_square(np.asarray([on[0].sum(), on[1].sum()]), np.asarray([1.0, 3.0])) < CHI2_999[1]
    foreground = tio.LabelSampler(patch_size=5)  # finds the LabelMap, centres on channels 1...
    centres = (
        np.asarray([loc.index for loc in foreground.sample_locations(subject, 500, _gen(8))]) + 2
    )
    assert np.all(seg[1:][(slice(None), *centres.T)].numpy().any(axis=0))


def test_sampling_past_two_to_the_24_voxels() -> None:
    """A 260³ map (17.6 M voxels > 2^24, torch.multinomial's limit) works, in float64."""
    seg = torch.zeros(1, 260, 260, 260, dtype=torch.uint8)
    seg[0, 200:203, 7:9, 100] = 1
    subject = tio.Subject(seg=tio.LabelMap(seg), w=tio.ScalarImage(seg))
    sampler = tio.LabelSampler(
        patch_size=16, label_name="seg", label_probabilities={0: 0.5, 1: 0.5}
    )
    centres = np.asarray([loc.index for loc in sampler.sample_locations(subject, 400, _gen(9))]) + 8
    fraction = (seg[0][tuple(centres.T)] == 1).float().mean().item()
    assert 0.4 < fraction < 0.6
    weighted = tio.WeightedSampler(patch_size=16, probability_map="w")
    centres = np.asarray([loc.index for loc in weighted.sample_locations(subject, 50, _gen(9))]) + 8
    assert np.all(seg[0][tuple(centres.T)].numpy() == 1)


# ------------------------------------------------------------------ tables and seeds
def test_tables_built_once_per_subject_and_reused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls = []
    original = label_module.build_tables

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(label_module, "build_tables", counting)
    seg = np.zeros((20, 20, 20), dtype=np.uint8)
    seg[5, 5, 5] = 1
    nib.save(nib.Nifti1Image(seg, np.eye(4)), tmp_path / "seg.nii")
    sampler = tio.LabelSampler(patch_size=4, label_name="seg", label_probabilities={1: 1})
    for _ in range(3):  # a new Subject with a new image each time (like a Queue's copies)
        subject = tio.Subject(seg=tio.LabelMap(tmp_path / "seg.nii"))
        assert {loc.index for loc in sampler.sample_locations(subject, 5, _gen())} == {(3, 3, 3)}
    assert len(calls) == 1
    tensor_subject = tio.Subject(seg=tio.LabelMap(torch.from_numpy(seg[None])))
    sampler.sample_locations(tensor_subject, 5, _gen())
    sampler.sample_locations(tensor_subject, 5, _gen())
    assert len(calls) == 2
    # rewriting the file invalidates its table
    seg[5, 5, 5], seg[10, 10, 10] = 0, 1
    nib.save(nib.Nifti1Image(seg, np.eye(4)), tmp_path / "seg.nii")
    subject = tio.Subject(seg=tio.LabelMap(tmp_path / "seg.nii"))
    assert {loc.index for loc in sampler.sample_locations(subject, 5, _gen())} == {(8, 8, 8)}


def test_same_seed_same_locations() -> None:
    seg = (torch.rand(1, 30, 30, 30) > 0.7).to(torch.uint8)
    subject = _subject(
        (30, 30, 30), seg=tio.LabelMap(seg), w=tio.ScalarImage(torch.rand(1, 30, 30, 30))
    )
    for sampler in (
        tio.UniformSampler(patch_size=7),
        tio.WeightedSampler(patch_size=7, probability_map="w"),
        tio.LabelSampler(patch_size=7, label_name="seg", label_probabilities={0: 1, 1: 1}),
    ):
        first = sampler.sample_locations(subject, 50, _gen(11))
        assert first == sampler.sample_locations(subject, 50, _gen(11))
        assert first != sampler.sample_locations(subject, 50, _gen(12))


# ------------------------------------------------------------------ datasets
def test_sampler_is_an_iterable_dataset_and_callable() -> None:
    subject = _subject((12, 12, 12), seg=tio.LabelMap(torch.ones(1, 12, 12, 12)))
    sampler = tio.LabelSampler(subject, patch_size=4, label_name="seg", num_patches=10, seed=0)
    patches = list(sampler)
    assert len(patches) == len(sampler) == 10
    for patch in patches:
        location = patch["patch_location"]
        np.testing.assert_array_equal(
            patch.t1.data.numpy(), subject.t1.data[(slice(None), *location.to_slices())].numpy()
        )
    assert len(list(sampler(subject, 7))) == 7
    stream = sampler(subject)  # endless without num_patches
    assert len([next(stream) for _ in range(200)]) == 200
    batches = list(SubjectsLoader(sampler, batch_size=4))
    assert [b.batch_size for b in batches] == [4, 4, 2]


def test_dataloader_workers_split_the_patches() -> None:
    subject = _subject((16, 16, 16))
    sampler = tio.UniformSampler(subject, patch_size=4, num_patches=11, seed=1)
    loader = DataLoader(sampler, batch_size=None, num_workers=2, collate_fn=lambda x: x)
    locations = [patch["patch_location"].index for patch in loader]
    assert len(locations) == 11
    assert len(set(locations)) > 6  # the two workers do not repeat each other's stream


# ------------------------------------------------------------------ validation
def test_validation_errors(tmp_path: Path) -> None:
    subject = _subject((10, 8, 6), w=tio.ScalarImage(torch.rand(1, 10, 8, 6)))
    with pytest.raises(ValueError, match="does not fit in spatial shape 10×8×6"):
        tio.UniformSampler(patch_size=(4, 9, 4)).sample_locations(subject, 1)
    padded = tio.UniformSampler(patch_size=(4, 9, 4), padding_mode=0)
    locations = padded.sample_locations(subject, 300, _gen())
    assert {loc.index[1] for loc in locations} == set(range(-4, 4))  # centres on every voxel
    assert padded.extract(subject, locations[0]).t1.shape == (1, 4, 9, 4)
    for bad in (0, -3, (4, 0, 4)):
        with pytest.raises(ValueError, match="patch_size must be positive"):
            tio.UniformSampler(patch_size=bad)
    with pytest.raises(TypeError, match="needs patch_size"):
        tio.UniformSampler()
    with pytest.raises(KeyError, match="Did you mean 'w'"):
        tio.WeightedSampler(subject, patch_size=2, probability_map="ww")
    with pytest.raises(ValueError, match="needs probability_map"):
        tio.WeightedSampler(subject, patch_size=2)
    negative = torch.rand(1, 10, 8, 6)
    negative[0, 5, 4, 3] = -1
    for weights, message in (
        (negative, "negative weights"),
        (torch.zeros(1, 10, 8, 6), "every weight of the probability map is zero"),
        (torch.full((1, 10, 8, 6), float("nan")), "NaN"),
    ):
        bad = _subject((10, 8, 6), w=tio.ScalarImage(weights))
        with pytest.raises(ValueError, match=message):
            tio.WeightedSampler(patch_size=2, probability_map="w").sample_locations(bad, 1)
    only_border = torch.zeros(1, 10, 8, 6)
    only_border[0, 0, 0, 0] = 1  # not a valid centre of a 3³ patch without padding
    border = _subject((10, 8, 6), w=tio.ScalarImage(only_border))
    with pytest.raises(ValueError, match="padding_mode="):
        tio.WeightedSampler(patch_size=3, probability_map="w").sample_locations(border, 1)
    with_padding = tio.WeightedSampler(patch_size=3, probability_map="w", padding_mode="edge")
    assert with_padding.sample_locations(border, 1, _gen())[0].index == (-1, -1, -1)
    for probabilities, message in (
        ({0: -1}, "non-negative"),
        ({0: 0, 1: 0}, "all zero"),
        ({}, "non-empty"),
        ({"a": 1}, "ints"),
    ):
        with pytest.raises(ValueError, match=message):
            tio.LabelSampler(patch_size=2, label_probabilities=probabilities)
    seg = _subject((10, 8, 6), seg=tio.LabelMap(torch.zeros(1, 10, 8, 6)))
    with pytest.raises(ValueError, match="no foreground voxels"):
        tio.LabelSampler(patch_size=2, label_name="seg").sample_locations(seg, 1)
    with pytest.raises(ValueError, match="needs label_name= or a LabelMap"):
        tio.LabelSampler(patch_size=2).sample_locations(subject, 1)
    one_hot = _subject((10, 8, 6), seg=tio.LabelMap(torch.zeros(2, 10, 8, 6)))
    with pytest.raises(ValueError, match="has classes 0...1"):
        tio.LabelSampler(one_hot, patch_size=2, label_name="seg", label_probabilities={3: 1})


# ------------------------------------------------------------------ laziness
def test_sampling_tables_read_slab_by_slab(tmp_path: Path, strict_backend) -> None:  # type: ignore[no-untyped-def]
    """A .nii label map is read in slabs and blocks, never whole, to build tables and draw."""
    seg = np.zeros((21, 19, 50), dtype=np.uint8)
    seg[8:10, 4:12, 30:33] = 1
    path = tmp_path / "seg.strict.nii"
    nib.save(nib.Nifti1Image(seg, np.eye(4)), path)
    subject = tio.Subject(seg=tio.LabelMap(path))
    sampler = tio.LabelSampler(patch_size=6, label_name="seg", label_probabilities={0: 1, 1: 1})
    locations = sampler.sample_locations(subject, 200, _gen())
    centres = np.asarray([loc.index for loc in locations]) + 3
    assert 0.35 < np.mean(seg[tuple(centres.T)] == 1) < 0.65
    largest = max(np.prod([s.stop - s.start for s in box]) for box in strict_backend.log)
    # one slab of 16 planes along k (the file's slowest axis) over the valid centres (16×14)
    assert largest <= 16 * 14 * 16
    assert not subject.seg.is_loaded


def test_gzip_map_is_read_once_per_call(tmp_path: Path) -> None:
    seg = np.zeros((20, 20, 20), dtype=np.uint8)
    seg[12, 3, 9] = 2
    nib.save(nib.Nifti1Image(seg, np.eye(4)), tmp_path / "seg.nii.gz")
    subject = tio.Subject(seg=tio.LabelMap(tmp_path / "seg.nii.gz"))
    sampler = tio.LabelSampler(patch_size=5, label_name="seg", label_probabilities={2: 1})
    assert {loc.index for loc in sampler.sample_locations(subject, 30, _gen())} == {(10, 1, 7)}
    assert not subject.seg.is_loaded


@pytest.mark.parametrize(
    "make",
    [
        lambda: tio.UniformSampler(16.5),
        lambda: tio.UniformSampler(True),
        lambda: tio.UniformSampler(patch_size=16.0),
        lambda: tio.WeightedSampler(patch_size=(16, 16.0, 16), probability_map="w"),
        lambda: tio.LabelSampler(patch_size=[8, True, 8]),
        lambda: tio.GridSampler(patch_size=(8, 8, 8.5)),
        lambda: tio.GridSampler(patch_size=8, patch_overlap=2.5),
        lambda: tio.GridSampler(patch_size=8, patch_overlap=True),
        lambda: tio.PatchAggregator((10, 10, 10.5)),
        lambda: tio.PatchAggregator((10, 10, 10), patch_overlap=(2, 2, 1.5)),
        lambda: tio.PatchAggregator((10, 10, 10), patch_overlap=False),
        lambda: tio.PatchAggregator((10, 10, 10), output_shape=(5, 5, 5.0)),
        lambda: tio.PatchAggregator((10, 10, 10), on_disk="o.nii.zarr", chunks=(4, 4, True)),
    ],
)
def test_sizes_must_be_whole_numbers_of_voxels(make) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TypeError, match="int or three ints"):
        make()


def test_num_patches_must_be_an_int() -> None:
    for bad in (True, 2.0, -1):
        with pytest.raises(ValueError, match="num_patches"):
            tio.UniformSampler(patch_size=4, num_patches=bad)  # type: ignore[arg-type]
