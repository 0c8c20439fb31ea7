"""Queue: exact counts, order and seeds, bounded memory, laziness, workers, loaders."""

from __future__ import annotations

import copy
import gc
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

import voxelflow as tio
from voxelflow.batch import SubjectsBatch
from voxelflow.loader import SubjectsLoader


def _subjects(count: int = 6, shape: tuple[int, int, int] = (12, 11, 10)) -> list[tio.Subject]:
    generator = torch.Generator().manual_seed(0)
    return [
        tio.Subject(
            t1=tio.ScalarImage(torch.rand(1, *shape, generator=generator)),
            seg=tio.LabelMap((torch.rand(1, *shape, generator=generator) > 0.5).to(torch.uint8)),
            id=n,
        )
        for n in range(count)
    ]


def _queue(subjects: list[tio.Subject], **kwargs: object) -> tio.Queue:
    options: dict[str, object] = {
        "patch_sampler": tio.UniformSampler(patch_size=4),
        "max_length": 12,
        "patches_per_volume": 5,
        "seed": 0,
    }
    options.update(kwargs)
    return tio.Queue(subjects, **options)  # type: ignore[arg-type]


def _queue_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("voxelflow-queue")]


def _stream(queue: tio.Queue) -> list[tuple[int, tuple[int, int, int], float]]:
    return [(p["id"], p["patch_location"].index, float(p.t1.data.sum())) for p in queue]


# ------------------------------------------------------------------ counts, order, seeds
@pytest.mark.parametrize("num_workers", [0, 2])
def test_exact_counts_and_patch_contents(num_workers: int) -> None:
    subjects = _subjects(7)
    queue = _queue(subjects, num_workers=num_workers, transform=tio.Flip(axes=(1,), p=1.0))
    patches = list(queue)
    assert len(patches) == len(queue) == queue.patches_per_epoch == 35
    assert Counter(p["id"] for p in patches) == {n: 5 for n in range(7)}
    for patch in patches:  # a flipped copy of the right region of the right subject
        source = subjects[patch["id"]]
        region = source.t1.data[(slice(None), *patch["patch_location"].to_slices())]
        torch.testing.assert_close(patch.t1.data, region.flip(2))
        assert patch.seg.data.dtype == torch.uint8
    plain = list(_queue(subjects, num_workers=num_workers))
    for patch in plain:  # copies that do not keep the volume alive
        data = patch.t1.data
        assert data.untyped_storage().nbytes() == data.numel() * data.element_size()
    mapped = list(_queue(subjects, transform=lambda subject: subject.copy()))  # any callable
    assert len(mapped) == 35
    batches = list(SubjectsLoader(queue, batch_size=8))
    assert [b.batch_size for b in batches] == [8, 8, 8, 8, 3]
    assert tuple(batches[0].t1.data.shape) == (8, 1, 4, 4, 4)
    assert all(isinstance(loc, tio.PatchLocation) for loc in batches[0].metadata["patch_location"])
    assert not _queue_threads()


def test_dataloader_workers_split_subjects_instead_of_repeating() -> None:
    queue = _queue(_subjects(7), num_workers=1)
    loader = SubjectsLoader(queue, batch_size=4, num_workers=2)
    for _ in range(2):  # two epochs
        ids = [i for batch in loader for i in batch.metadata["id"]]
        assert len(ids) == len(queue) == 35
        assert Counter(ids) == {n: 5 for n in range(7)}


def test_one_seed_reproduces_the_stream_whatever_the_threads() -> None:
    subjects = _subjects(5)
    transform = tio.Compose([tio.Flip(axes=(0,), p=0.5), tio.Noise(std=0.2)])
    streams = [
        _stream(_queue(subjects, num_workers=w, transform=transform, seed=7)) for w in (0, 2, 3)
    ]
    assert streams[0] == streams[1] == streams[2]
    assert streams[0] != _stream(_queue(subjects, transform=transform, seed=8))
    queue = _queue(subjects, transform=transform, seed=7)
    first, second = _stream(queue), _stream(queue)
    assert first == streams[0] and second != first  # epochs differ, reproducibly
    queue.set_epoch(1)
    assert _stream(queue) == second and _stream(queue) == second


def test_dataloader_workers_reproducible_with_set_epoch() -> None:
    def run() -> list[float]:
        queue = _queue(_subjects(4), transform=tio.Noise(std=0.1), seed=3)
        queue.set_epoch(0)
        loader = SubjectsLoader(queue, batch_size=3, num_workers=2)
        return sorted(float(x) for batch in loader for x in batch.t1.data.sum((1, 2, 3, 4)))

    assert run() == run()


def test_shuffle_flags() -> None:
    subjects = _subjects(6)
    plain = _queue(subjects, shuffle_subjects=False, shuffle_patches=False, num_workers=2)
    ids = [p["id"] for p in plain]
    assert ids == [n for n in range(6) for _ in range(5)]
    # with patches not shuffled, each subject's patches come in the sampler's order
    by_subjects = _queue(subjects, shuffle_patches=False, seed=2)
    ids = [p["id"] for p in by_subjects]
    blocks = [ids[n : n + 5] for n in range(0, 30, 5)]
    assert all(len(set(block)) == 1 for block in blocks)
    assert [b[0] for b in blocks] != list(range(6))  # subjects shuffled
    mixed = [p["id"] for p in _queue(subjects, seed=2)]
    assert any(len(set(mixed[n : n + 5])) > 1 for n in range(0, 30, 5))
    assert Counter(mixed) == Counter(ids)


# ------------------------------------------------------------------ bounds and laziness
def test_buffer_bound_holds_with_workers() -> None:
    """Patches made but not yet consumed never exceed max_length, even with a slow consumer."""
    made = [0]
    lock = threading.Lock()

    class Counting(tio.UniformSampler):
        def extract(self, subject, location):  # type: ignore[no-untyped-def]
            with lock:
                made[0] += 1
            return super().extract(subject, location)

    queue = _queue(
        _subjects(12),
        patch_sampler=Counting(patch_size=4),
        max_length=11,
        patches_per_volume=3,
        num_workers=3,
    )
    consumed, worst = 0, 0
    for _ in queue:
        consumed += 1
        time.sleep(0.002)
        worst = max(worst, made[0] - consumed + 1)
    assert consumed == 36 and made[0] == 36
    assert 6 <= worst <= 11


def test_caller_subjects_never_loaded_or_modified(tmp_path: Path) -> None:
    paths = []
    for n in range(3):
        array = np.random.default_rng(n).normal(size=(14, 13, 12)).astype(np.float32)
        nib.save(nib.Nifti1Image(array, np.eye(4)), tmp_path / f"s{n}.nii")
        paths.append(tmp_path / f"s{n}.nii")
    subjects = [tio.Subject(t1=tio.ScalarImage(p), id=n) for n, p in enumerate(paths)]
    memory = _subjects(2)
    before = [copy.copy(s.t1.__dict__) for s in subjects]
    data = [s.t1.data.clone() for s in memory]
    transform = tio.Compose([tio.ZNormalization(), tio.Noise(std=0.1)])  # a whole-volume part
    for queue in (
        _queue(subjects, num_workers=2, transform=transform),
        _queue(subjects, transform=tio.Flip()),
        _queue(memory, transform=transform),
    ):
        assert len(list(queue)) == len(queue)
    for subject, state in zip(subjects, before, strict=True):
        assert not subject.t1.is_loaded
        assert subject.t1.__dict__ == state  # not even a backend handle was opened on it
    for subject, tensor in zip(memory, data, strict=True):
        assert torch.equal(subject.t1.data, tensor)


def test_patch_first_reads_only_patches(tmp_path: Path, strict_backend) -> None:  # type: ignore[no-untyped-def]
    """.nii subjects behind a backend that raises on whole reads: patches only, even for
    label sampling (slab tables) and flip+noise transforms."""
    subjects = []
    for n in range(3):
        rng = np.random.default_rng(n)
        t1 = rng.normal(size=(40, 18, 17)).astype(np.float32)
        seg = (rng.random((40, 18, 17)) > 0.9).astype(np.uint8)
        nib.save(nib.Nifti1Image(t1, np.eye(4)), tmp_path / f"t1_{n}.strict.nii")
        nib.save(nib.Nifti1Image(seg, np.eye(4)), tmp_path / f"seg_{n}.strict.nii")
        subjects.append(
            tio.Subject(
                t1=tio.ScalarImage(tmp_path / f"t1_{n}.strict.nii"),
                seg=tio.LabelMap(tmp_path / f"seg_{n}.strict.nii"),
            )
        )
    transform = tio.Compose([tio.Flip(axes=(0,), p=0.5), tio.Noise(std=0.1), tio.Clamp(-3, 3)])
    sampler = tio.LabelSampler(patch_size=6, label_name="seg", label_probabilities={0: 1, 1: 1})
    queue = _queue(subjects, patch_sampler=sampler, num_workers=2, transform=transform)
    patches = list(queue)
    assert len(patches) == 15
    on_label = [p.seg.data[0, 3, 3, 3].item() == 1 for p in patches]
    assert sum(on_label) >= 3  # label sampling did happen (about half)
    volume = 40 * 18 * 17
    assert max(int(np.prod([s.stop - s.start for s in b])) for b in strict_backend.log) < volume / 2
    with pytest.raises(AssertionError, match="whole read"):  # the probe works
        list(_queue(subjects, transform=tio.Lambda(torch.abs)))
    # statistics stream slab by slab: a z-normalised queue reads no volume whole either
    assert len(list(_queue(subjects, transform=tio.ZNormalization()))) == 15


def test_whole_volume_transform_applied_once_per_subject() -> None:
    subjects = _subjects(3)
    calls = Counter()

    def tag(x: torch.Tensor) -> torch.Tensor:
        calls[threading.get_ident()] += 1
        return x

    transform = tio.Compose([tio.Lambda(tag, types_to_apply=("intensity",)), tio.ZNormalization()])
    queue = _queue(subjects, transform=transform, shuffle_patches=False, shuffle_subjects=False)
    patches = list(queue)
    assert sum(calls.values()) == 3
    for patch in patches:  # cut from the z-normalised volume, not normalised per patch
        volume = subjects[patch["id"]].t1.data
        expected = (volume - volume.mean()) / volume.std()  # TorchIO's: Bessel's correction
        region = expected[(slice(None), *patch["patch_location"].to_slices())]
        torch.testing.assert_close(patch.t1.data, region)


def test_epoch_peak_memory_does_not_grow_with_volume_size(tmp_path: Path) -> None:
    """Peak anonymous memory (RSS without memory-mapped file pages) of an epoch over .nii
    subjects, in a fresh process, for 40³ and 256×256×160 volumes (40 MiB each): about the
    same, far below one volume (reading the volumes whole adds about 240 MiB here)."""
    script = textwrap.dedent(
        """
        import sys, threading, time
        import numpy as np, nibabel as nib, torch
        import voxelflow as tio
        shape, folder = tuple(int(v) for v in sys.argv[1].split("x")), sys.argv[2]
        paths = []
        for n in range(3):
            path = f"{folder}/{sys.argv[1]}_{n}.nii"
            image = nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4))
            image.header.set_data_dtype(np.float32)
            with open(path, "wb") as f:
                image.header.write_to(f)
                f.seek(int(image.header["vox_offset"]))
                f.truncate(int(image.header["vox_offset"]) + int(np.prod(shape)) * 4)
            paths.append(path)
        subjects = [tio.Subject(t1=tio.ScalarImage(p)) for p in paths]
        def epoch():
            queue = tio.Queue(subjects, tio.UniformSampler(patch_size=24), max_length=20,
                              patches_per_volume=8, num_workers=2, seed=0,
                              transform=tio.Compose([tio.Flip(), tio.Noise(std=0.1)]))
            return sum(1 for _ in queue)
        def anonymous():  # resident memory that is not file pages (memory maps)
            with open("/proc/self/status") as status:
                line = next(l for l in status if l.startswith("RssAnon:"))
            return int(line.split()[1]) / 1024
        small = [tio.Subject(t1=tio.ScalarImage(torch.rand(1, 30, 30, 30)))]
        list(tio.Queue(small, tio.UniformSampler(patch_size=24), max_length=20, patches_per_volume=8, num_workers=2))
        peak, done = [0.0], threading.Event()
        def watch():
            while not done.is_set():
                peak[0] = max(peak[0], anonymous())
                time.sleep(0.001)
        before = anonymous()
        watcher = threading.Thread(target=watch)
        watcher.start()
        assert epoch() == 24
        done.set()
        watcher.join()
        print(peak[0] - before)
        """
    )
    growth = {}
    for shape in ("40x40x40", "256x256x160"):
        result = subprocess.run(
            [sys.executable, "-c", script, shape, str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        growth[shape] = float(result.stdout.split()[-1])
    volume_mib = 256 * 256 * 160 * 4 / 2**20  # 40 MiB
    assert growth["256x256x160"] < growth["40x40x40"] + volume_mib / 4, growth


# ------------------------------------------------------------------ errors and stopping
class _FailingSampler(tio.UniformSampler):
    def sample_locations(self, subject, num_patches=None, generator=None):  # type: ignore[no-untyped-def]
        if subject["id"] == 3:
            raise RuntimeError("disk on fire")
        return super().sample_locations(subject, num_patches, generator)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_worker_errors_reach_the_training_loop(num_workers: int) -> None:
    queue = _queue(
        _subjects(6), patch_sampler=_FailingSampler(patch_size=4), num_workers=num_workers
    )
    with pytest.raises(RuntimeError, match="disk on fire") as info:
        for _ in SubjectsLoader(queue, batch_size=4):
            pass
    assert any("subject 3" in note for note in getattr(info.value, "__notes__", []))


def test_errors_while_preparing_a_subject_name_its_files(tmp_path: Path) -> None:
    good = np.zeros((20, 20, 20), dtype=np.int16)
    nib.save(nib.Nifti1Image(good, np.eye(4)), tmp_path / "good.nii")
    nib.save(nib.Nifti1Image(good[:10], np.eye(4)), tmp_path / "small_seg.nii")
    subjects = [
        tio.Subject(t1=tio.ScalarImage(tmp_path / "good.nii")),
        tio.Subject(
            t1=tio.ScalarImage(tmp_path / "good.nii"),
            seg=tio.LabelMap(tmp_path / "small_seg.nii"),
        ),
    ]
    queue = tio.Queue(
        subjects,
        tio.UniformSampler(patch_size=4),
        max_length=4,
        patches_per_volume=2,
        shuffle_subjects=False,
    )
    with pytest.raises(ValueError) as info:
        list(queue)
    notes = " ".join(getattr(info.value, "__notes__", []))
    assert "subject 1" in notes and "small_seg.nii" in notes and "good.nii" in notes
    gc.collect()
    assert not _queue_threads()


def test_stopping_early_leaves_no_thread() -> None:
    queue = _queue(_subjects(8), num_workers=3, max_length=20)
    for n, _ in enumerate(queue):
        if n == 2:
            break
    gc.collect()
    deadline = time.monotonic() + 5
    while _queue_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _queue_threads()
    loader = iter(SubjectsLoader(_queue(_subjects(8), num_workers=2), batch_size=2, num_workers=2))
    next(loader)
    workers = list(loader._workers)  # type: ignore[attr-defined]
    del loader
    gc.collect()
    for worker in workers:
        worker.join(timeout=10)
        assert not worker.is_alive()


# ------------------------------------------------------------------ samplers, sizes, validation
def test_grid_sampler_drives_a_queue() -> None:
    subjects = _subjects(3, shape=(8, 8, 8))
    grid = tio.GridSampler(patch_size=4)  # 8 patches per subject
    patches = list(_queue(subjects, patch_sampler=grid, patches_per_volume=8, max_length=16))
    assert len(patches) == 24
    for n in range(3):
        corners = {p["patch_location"].index for p in patches if p["id"] == n}
        assert corners == {(i, j, k) for i in (0, 4) for j in (0, 4) for k in (0, 4)}


def test_max_memory_uses_real_dtypes() -> None:
    subjects = [
        tio.Subject(
            t1=tio.ScalarImage(torch.zeros(1, 10, 10, 10, dtype=torch.int16)),
            seg=tio.LabelMap(torch.zeros(2, 10, 10, 10, dtype=torch.uint8)),
        )
    ]
    sampler = tio.UniformSampler(patch_size=4)
    queue = tio.Queue(subjects, sampler, max_length=10, patches_per_volume=2)
    assert queue.max_memory == 10 * 64 * (2 + 2)
    noisy = tio.Queue(subjects, sampler, max_length=10, patches_per_volume=2, transform=tio.Noise())
    # the buffer holds int16 patches; noise makes them float32 as they are handed out
    assert noisy.max_memory == 10 * 64 * (2 + 2)
    threads = tio.Queue(
        subjects, sampler, max_length=10, patches_per_volume=2, transform=tio.Noise(), num_workers=2
    )  # plus the patches the threads transform ahead of the loop
    assert threads.max_memory == 10 * 64 * (2 + 2) + 4 * 64 * (4 + 2)
    whole = tio.Queue(
        subjects, sampler, max_length=10, patches_per_volume=2, transform=tio.ZNormalization()
    )
    # the buffer holds normalised float32 patches, plus the subject in flight
    assert whole.max_memory == 10 * 64 * 6 + 1000 * 6
    assert noisy.max_memory_pretty == "2.5 KiB"


def test_max_memory_counts_volumes_read_whole(tmp_path: Path) -> None:
    """A .nii.gz is decoded whole before its patches are cut: one volume per worker."""
    volume = np.zeros((40, 30, 20), dtype=np.int16)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "t1.nii.gz")
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "t1.nii")
    sampler = tio.UniformSampler(patch_size=4)
    patches = 10 * 64 * 2
    for name, whole in (("t1.nii", 0), ("t1.nii.gz", 40 * 30 * 20 * 2)):
        subjects = [tio.Subject(t1=tio.ScalarImage(tmp_path / name))]
        for workers in (0, 3):
            queue = tio.Queue(
                subjects, sampler, max_length=10, patches_per_volume=2, num_workers=workers
            )
            ahead = 4 * 64 * 4 if workers else 0  # patches leave the buffer as float32 data
            assert queue.max_memory == patches + ahead + max(1, workers) * whole
    assert not subjects[0].t1.is_loaded


def test_distributed_sampler_by_hand() -> None:
    subjects = _subjects(8)
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(subjects, num_replicas=2, rank=rank, shuffle=True, seed=0)
        sampler.set_epoch(3)
        queue = _queue(subjects, subject_sampler=sampler, shuffle_subjects=False)
        ids = [p["id"] for p in queue]
        assert len(ids) == len(queue) == len(sampler) * 5 == 20
        seen.append(set(ids))
    assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == set(range(8))


def test_validation() -> None:
    subjects = _subjects(2)
    sampler = tio.UniformSampler(patch_size=4)
    with pytest.raises(ValueError, match="exceeds max_length"):
        tio.Queue(subjects, sampler, max_length=5, patches_per_volume=6)
    with pytest.raises(TypeError, match="PatchSampler"):
        tio.Queue(subjects, "uniform")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        tio.Queue([], sampler)
    with pytest.raises(ValueError, match="num_workers"):
        tio.Queue(subjects, sampler, num_workers=-1)
    with pytest.raises(ValueError, match="does not fit"):
        list(tio.Queue(subjects, tio.UniformSampler(patch_size=20), patches_per_volume=2))


# ------------------------------------------------------------------ loader and batches
def test_pin_memory_pins_every_image_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    from torch.utils.data._utils.pin_memory import pin_memory

    batch = SubjectsBatch.from_subjects(_subjects(2))
    pinned = []

    def fake_pin(self: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        pinned.append(tuple(self.shape))
        return self.clone()

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    out = pin_memory(batch)  # what DataLoader(pin_memory=True) calls on each batch
    assert isinstance(out, SubjectsBatch) and out.metadata["id"] == [0, 1]
    assert sorted(pinned) == [(2, 1, 12, 11, 10)] * 2
    torch.testing.assert_close(out.t1.data, batch.t1.data)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinning needs CUDA (CPU-only torch)")
def test_pin_memory_really_pins() -> None:
    loader = SubjectsLoader(_queue(_subjects(2)), batch_size=4, pin_memory=True)
    batch = next(iter(loader))
    assert batch.t1.data.is_pinned() and batch.seg.data.is_pinned()
    on_gpu = batch.to("cuda", non_blocking=True)
    assert on_gpu.t1.data.is_cuda and on_gpu.metadata == batch.metadata


def test_batch_to_and_custom_collate() -> None:
    queue = _queue(_subjects(2))
    batch = next(iter(SubjectsLoader(queue, batch_size=4)))
    doubled = batch.to(torch.float64)
    assert doubled.t1.data.dtype == torch.float64 and doubled.metadata is batch.metadata
    lists = next(iter(SubjectsLoader(queue, batch_size=3, collate_fn=list)))
    assert isinstance(lists, list) and len(lists) == 3 and isinstance(lists[0], tio.Subject)
    images = next(iter(tio.loader.ImagesLoader([s.t1 for s in _subjects(3)], batch_size=3)))
    assert isinstance(images, tio.ImagesBatch) and images.batch_size == 3


def test_dataloader_without_collate_over_lazy_subjects_keeps_them_lazy(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), tmp_path / "a.nii")
    subjects = [tio.Subject(t1=tio.ScalarImage(tmp_path / "a.nii")) for _ in range(2)]
    batch = next(iter(DataLoader(subjects, batch_size=2, collate_fn=tio.batch.collate_subjects)))
    assert batch.t1.data.sum().item() == 128 and not subjects[0].t1.is_loaded
