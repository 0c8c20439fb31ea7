"""On-disk aggregation: equals the in-memory result, is valid NIfTI-Zarr, and stays in its bound."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import zarr

import voxelflow as tio
from voxelflow.loader import SubjectsLoader


def subject_and_sampler(shape=(1, 30, 26, 41), patch=(12, 10, 16), overlap=(4, 2, 6), padding=None):
    tensor = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    affine = np.diag([0.8, 0.9, 1.2, 1.0])
    affine[:3, 3] = (-10, 4, 7)
    subject = tio.Subject(t1=tio.ScalarImage(tensor, affine=affine))
    return subject, tio.GridSampler(subject, patch, overlap, padding_mode=padding)


def model(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, x**2, 1 - x], dim=1)


def aggregate(sampler, **kwargs) -> tio.PatchAggregator:
    aggregator = tio.PatchAggregator.from_sampler(sampler, **kwargs)
    for batch in SubjectsLoader(sampler, batch_size=3):
        aggregator.add_batch(model(batch.t1.data), batch)
    aggregator.finish()
    return aggregator


@pytest.mark.parametrize(
    ("mode", "padding"), [("hann", None), ("crop", "edge"), ("gaussian", "constant")]
)
def test_on_disk_equals_in_memory(tmp_path, mode, padding):
    subject, sampler = subject_and_sampler(padding=padding)
    path = tmp_path / "out.nii.zarr"
    memory = aggregate(sampler, overlap_mode=mode).get_image()
    disk = aggregate(sampler, overlap_mode=mode, on_disk=path, chunks=(16, 16, 8)).get_image()
    assert not disk.is_loaded
    assert disk.shape == memory.shape == (3, 30, 26, 41)
    np.testing.assert_allclose(disk.affine, memory.affine)
    torch.testing.assert_close(disk.data, memory.data, rtol=1e-6, atol=1e-6)
    region = disk[:, 3:9, 20:, 30:35]  # read back lazily, region by region
    torch.testing.assert_close(region.data, memory.data[:, 3:9, 20:, 30:35], rtol=1e-6, atol=1e-6)
    array = zarr.open_group(path, mode="r")["0"]
    assert array.shape == (3, 41, 26, 30)  # NIfTI-Zarr order (c, z, y, x)
    assert array.chunks == (1, 8, 16, 16)


def test_the_reference_reader_reads_it(tmp_path):
    niizarr = pytest.importorskip("niizarr")
    subject, sampler = subject_and_sampler()
    path = tmp_path / "out.nii.zarr"
    image = aggregate(sampler, overlap_mode="average", on_disk=path).get_image()
    nifti = niizarr.zarr2nii(str(path))
    data = np.asarray(nifti.dataobj)  # (x, y, z, 1, c)
    assert data.shape == (30, 26, 41, 1, 3)
    np.testing.assert_allclose(np.moveaxis(data[:, :, :, 0], -1, 0), image.numpy(), rtol=1e-6)
    np.testing.assert_allclose(nifti.header.get_best_affine(), subject.t1.affine, atol=1e-6)


def test_argmax_on_disk_writes_labels(tmp_path):
    niizarr = pytest.importorskip("niizarr")
    subject, sampler = subject_and_sampler()
    path = tmp_path / "labels.nii.zarr"
    labels = aggregate(sampler, overlap_mode="hann", on_disk=path, argmax=True).get_image()
    expected = aggregate(sampler, overlap_mode="hann").get_image(argmax=True)
    assert isinstance(labels, tio.LabelMap)
    assert labels.shape == (1, 30, 26, 41) and labels.data.dtype == torch.uint8
    assert torch.equal(labels.data, expected.data)
    assert set(torch.unique(labels.data).tolist()) == {0, 2}  # x or 1 - x wins, never x²
    nifti = niizarr.zarr2nii(str(path))
    assert nifti.header.get_intent()[0] == "label"
    np.testing.assert_array_equal(np.asarray(nifti.dataobj), labels.numpy()[0])


def test_out_of_order_patches_and_aborts_leave_nothing_behind(tmp_path):
    subject, sampler = subject_and_sampler()
    path = tmp_path / "out.nii.zarr"
    aggregator = tio.PatchAggregator.from_sampler(
        sampler, overlap_mode="average", on_disk=path, chunks=8
    )
    patch = torch.rand(1, 3, 12, 10, 16)
    with pytest.raises(ValueError, match="grid order"):  # k jumps past chunks never covered
        aggregator.add_batch(patch, [sampler.locations[-1]])
    aggregator.abort()
    aggregator = tio.PatchAggregator.from_sampler(
        sampler, overlap_mode="average", on_disk=path, chunks=8
    )
    first_row = [location for location in sampler.locations if location.index[2] == 0]
    aggregator.add_batch(patch.expand(len(first_row), -1, -1, -1, -1), first_row)
    later = next(location for location in sampler.locations if location.index[2] >= 8)
    aggregator.add_batch(patch, [later])  # finishes the slab k < 8
    with pytest.raises(ValueError, match="already written"):
        aggregator.add_batch(patch, [first_row[0]])
    aggregator.abort()
    assert os.listdir(tmp_path) == []
    # a missing batch is an error too, and nothing is left behind
    with (
        pytest.raises(ValueError, match="covered by no patch"),
        tio.PatchAggregator.from_sampler(
            sampler, overlap_mode="average", on_disk=path
        ) as aggregator,
    ):
        aggregator.add_batch(patch, [sampler.locations[0]])
    assert os.listdir(tmp_path) == []


def test_on_disk_bad_options():
    with pytest.raises(ValueError, match=r"name the output \*.nii.zarr"):
        tio.PatchAggregator((8, 8, 8), on_disk="out.nii.gz")
    with pytest.raises(ValueError, match="argmax= applies to on-disk outputs"):
        tio.PatchAggregator((8, 8, 8), argmax=True)
    aggregator = tio.PatchAggregator((8, 8, 8), "average", on_disk="never-written.nii.zarr")
    location = [tio.PatchLocation((0, 0, 0), (8, 8, 8))]
    with pytest.raises(ValueError, match="several outputs"):
        aggregator.add_batch(
            {"a": torch.ones(1, 1, 8, 8, 8), "b": torch.ones(1, 1, 8, 8, 8)}, location
        )
    assert not os.path.exists("never-written.nii.zarr")


MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, sys, threading, time
    import torch, voxelflow as tio
    import zarr  # imported before the baseline: its import is not the accumulator's memory
    from voxelflow.loader import SubjectsLoader

    def anon_bytes():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024

    torch.set_num_threads(1)
    shape = (64, 64, 320)
    image = tio.ScalarImage(torch.rand((1, *shape), generator=torch.Generator().manual_seed(0)))
    subject = tio.Subject(t1=image)
    sampler = tio.GridSampler(subject, 32, 8)
    expected = image.data[:, 40:42, 50:52, 200:202] * torch.tensor([1.0, 2, 3, 4])[:, None, None, None]
    results = {}
    for mode in ("disk", "memory"):
        on_disk = sys.argv[1] if mode == "disk" else None
        aggregator = tio.PatchAggregator.from_sampler(
            sampler, overlap_mode="hann", on_disk=on_disk, chunks=(32, 32, 16)
        )
        peak, done = [0], [False]
        def watch():
            while not done[0]:
                peak[0] = max(peak[0], anon_bytes())
                time.sleep(0.002)
        baseline = anon_bytes()
        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        with torch.inference_mode():
            for batch in SubjectsLoader(sampler, batch_size=4):
                x = batch.t1.data
                aggregator.add_batch(torch.cat([x, 2 * x, 3 * x, 4 * x], 1), batch)
        if on_disk:
            aggregator.finish()
            bound = aggregator.memory_bound
            sample = aggregator.get_image()[:, 40:42, 50:52, 200:202].data
        else:
            bound = aggregator.memory_bound
            sample = aggregator.get_output()[:, 40:42, 50:52, 200:202]
        done[0] = True
        thread.join()
        results[mode] = {
            "extra": peak[0] - baseline, "bound": bound, "output": 4 * 4 * 64 * 64 * 320,
            "error": float((sample - expected).abs().max()),
        }
        del aggregator, sample
    print(json.dumps(results))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_on_disk_memory_stays_under_its_bound(tmp_path):
    """A 4-channel 64×64×320 output (20 MiB, 25 MiB with weights) through a bound of ~6 MiB.

    Measured in a fresh process (anonymous resident memory, sampled every 2 ms) so that the
    figures are this run's alone; glibc is told to hand large blocks back to the system.
    """
    script = tmp_path / "memory.py"
    script.write_text(MEMORY_SCRIPT)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_ARENA_MAX": "1"}
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "out.nii.zarr")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    disk, memory = figures["disk"], figures["memory"]
    assert disk["error"] < 1e-5 and memory["error"] < 1e-5
    assert disk["bound"] < disk["output"] / 3  # the bound is well under the whole output
    slack = 8 * 2**20  # a batch of patches and the model's outputs, zarr's compression buffers
    assert disk["extra"] < disk["bound"] + slack, figures
    assert memory["extra"] > disk["output"]  # the in-memory run does hold the whole output
    assert disk["extra"] < memory["extra"] / 2, figures


def _fill_disk_after(monkeypatch, writes: int) -> list[int]:
    """Make the zarr store raise ENOSPC (as a full disk does) after ``writes`` chunk writes."""
    import errno

    from zarr.storage import LocalStore

    original = LocalStore.set
    done: list[int] = []

    async def set_or_fail(self, key, value):  # type: ignore[no-untyped-def]
        if key.startswith("0/") or "/c/" in key:
            if len(done) >= writes:
                raise OSError(errno.ENOSPC, "No space left on device")
            done.append(1)
        return await original(self, key, value)

    monkeypatch.setattr(LocalStore, "set", set_or_fail)
    return done


@pytest.mark.parametrize("inside_with", [True, False])
def test_a_full_disk_names_the_output_and_leaves_nothing(
    tmp_path, monkeypatch, capfd, inside_with
) -> None:
    subject = tio.Subject(t1=tio.ScalarImage(torch.rand(1, 20, 18, 40)))
    sampler = tio.GridSampler(subject, (10, 9, 10), (2, 2, 2))
    path = tmp_path / "out.nii.zarr"
    _fill_disk_after(monkeypatch, writes=2)

    def run(aggregator):  # type: ignore[no-untyped-def]
        for batch in SubjectsLoader(sampler, batch_size=4):
            aggregator.add_batch(batch.t1.data, batch)
        aggregator.finish()

    with pytest.raises(RuntimeError) as info:
        if inside_with:
            with tio.PatchAggregator.from_sampler(
                sampler, overlap_mode="hann", on_disk=path, chunks=8
            ) as aggregator:
                run(aggregator)
        else:
            run(
                tio.PatchAggregator.from_sampler(
                    sampler, overlap_mode="hann", on_disk=path, chunks=8
                )
            )
    message = str(info.value)
    assert str(path) in message and "No space left on device" in message
    assert "free space" in message
    assert os.listdir(tmp_path) == []  # no store, no hidden partial
    assert len(capfd.readouterr().err) < 2000  # one error, not a flood of tracebacks
