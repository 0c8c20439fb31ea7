"""Compose, OneOf, SomeOf: histories of what ran, seeds, splitting for the Queue."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

import voxelflow as tio


def _subject() -> tio.Subject:
    return tio.Subject(t1=tio.ScalarImage(torch.rand(1, 6, 6, 6)))


def test_some_of_applies_a_subset_and_records_it() -> None:
    candidates = [
        tio.Noise(std=0.1),
        tio.Gamma(log_gamma=0.1),
        tio.Flip(axes=(0,)),
        tio.Clamp(0, 1),
    ]
    some = tio.SomeOf(candidates, num_transforms=(1, 3), seed=0)
    counts, names = Counter(), Counter()
    for _ in range(300):
        history = [entry.name for entry in some(_subject()).applied_transforms]
        assert len(set(history)) == len(history)  # without replacement
        counts[len(history)] += 1
        names.update(history)
    assert set(counts) == {1, 2, 3} and all(60 < counts[n] < 140 for n in (1, 2, 3))
    assert all(100 < names[n] < 200 for n in ("Noise", "Gamma", "Flip", "Clamp"))
    repeated = tio.SomeOf([tio.Noise(std=0.1)], num_transforms=3, replace=True)
    assert [e.name for e in repeated(_subject()).applied_transforms] == ["Noise"] * 3
    assert len(tio.SomeOf(candidates, num_transforms=9)(_subject()).applied_transforms) == 4


def test_some_of_same_seed_same_choice_and_values() -> None:
    def make() -> tio.SomeOf:
        candidates = [tio.Noise(std=0.3), tio.Gamma(log_gamma=(-1, 1)), tio.Blur(std=1)]
        return tio.SomeOf(candidates, num_transforms=(0, 3), seed=4)

    subject = _subject()
    a, b = make(), make()
    for _ in range(5):
        x, y = a(subject), b(subject)
        assert [e.params for e in x.applied_transforms] == [e.params for e in y.applied_transforms]
        assert torch.equal(x.t1.data, y.t1.data)


def test_one_of_records_the_chosen_transform() -> None:
    one = tio.OneOf({tio.Noise(std=0.1): 3, tio.Gamma(log_gamma=0.2): 1}, seed=1)
    names = Counter(one(_subject()).applied_transforms[0].name for _ in range(400))
    assert 250 < names["Noise"] < 350 and names["Gamma"] == 400 - names["Noise"]
    out = one(_subject())
    assert len(out.applied_transforms) == 1


def test_bad_some_of() -> None:
    with pytest.raises(ValueError, match="0 <= low <= high"):
        tio.SomeOf([tio.Noise()], num_transforms=(3, 1))
    with pytest.raises(TypeError, match="num_transforms must be an int"):
        tio.SomeOf([tio.Noise()], num_transforms=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="wrap functions with tio.Lambda"):
        tio.SomeOf([lambda x: x])  # type: ignore[list-item]


def test_split_for_the_queue_and_laziness() -> None:
    on_patches = tio.Lambda(torch.abs, patchwise=True)
    pipeline = tio.Compose(
        [tio.ZNormalization(), tio.Blur(std=1), on_patches, tio.Gamma(log_gamma=0.1), tio.Noise()]
    )
    whole, per_patch = pipeline.split()
    assert [type(t).__name__ for t in whole] == ["ZNormalization", "Blur"]  # type: ignore[union-attr]
    assert [type(t).__name__ for t in per_patch] == ["Lambda", "Gamma", "Noise"]  # type: ignore[union-attr]
    whole, per_patch = tio.Compose([tio.Noise(), on_patches]).split()
    assert [type(t).__name__ for t in whole] == ["Noise"]  # type: ignore[union-attr]
    assert [type(t).__name__ for t in per_patch] == ["Lambda"]  # type: ignore[union-attr]
    assert not pipeline.lazy and tio.Compose([tio.Noise(), tio.Blur()]).lazy
    assert not tio.Compose([tio.Motion()]).lazy
    assert tio.SomeOf([tio.Noise(), tio.Gamma()]).patchwise
    assert not tio.SomeOf([tio.Noise(), tio.Blur()]).patchwise
    both = tio.Compose([tio.Noise()]) + tio.Compose([tio.Gamma(), tio.Blur()])
    assert [type(t).__name__ for t in both] == ["Noise", "Gamma", "Blur"]


def test_queue_patches_equal_the_whole_transformed_subject(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Noise, Blur, Gamma and Standardize in a Queue: each patch is the region of the whole
    transformed subject, with the parameters the patch recorded."""
    import nibabel as nib
    import numpy as np
    from equivalence import patch_region, replay_history

    subjects = []
    for n in range(2):
        array = np.random.default_rng(n).normal(10, 2, size=(20, 18, 16)).astype(np.float32)
        nib.save(nib.Nifti1Image(array, np.eye(4)), tmp_path / f"t{n}.nii")
        subjects.append(tio.Subject(t1=tio.ScalarImage(tmp_path / f"t{n}.nii"), id=n))
    members = [
        tio.Standardize(),
        tio.Gamma(log_gamma=(-0.2, 0.2)),
        tio.Blur(std=(0.5, 1.5)),
        tio.Noise(std=0.3),
    ]
    queue = tio.Queue(
        subjects,
        tio.UniformSampler(patch_size=(7, 6, 5)),
        max_length=8,
        patches_per_volume=4,
        transform=tio.Compose(members),
        seed=0,
    )
    for patch in queue:
        whole = replay_history(subjects[patch["id"]], members, patch.applied_transforms)
        expected = whole.t1.data[(slice(None), *patch_region(patch))]
        assert torch.equal(patch.t1.data, expected)
