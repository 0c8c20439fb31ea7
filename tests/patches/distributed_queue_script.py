"""Run by ``tests/patches/test_distributed.py`` under ``torchrun --nproc_per_node=2`` (gloo).

Each rank runs two epochs of a Queue over its DistributedSampler share (the
second epoch through a DataLoader with two worker processes) and rank 0 writes
what every rank saw to the JSON file named on the command line.
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
from torch.utils.data.distributed import DistributedSampler

import voxelflow as tio
from voxelflow.loader import SubjectsLoader


def main(output: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    subjects = [
        tio.Subject(t1=tio.ScalarImage(torch.full((1, 8, 8, 8), float(n))), id=n) for n in range(10)
    ]
    sampler = tio.UniformSampler(subjects[0], patch_size=4)
    subject_sampler = DistributedSampler(subjects, shuffle=True, seed=0)
    queue = tio.Queue(
        subjects,
        patch_sampler=sampler,
        subject_sampler=subject_sampler,
        shuffle_subjects=False,  # the sampler controls the order
        max_length=12,
        patches_per_volume=3,
        num_workers=2,
        transform=tio.Flip(axes=(0,), p=0.5),
        seed=1,
    )
    report = {}
    for epoch in range(2):
        subject_sampler.set_epoch(epoch)
        loader = SubjectsLoader(queue, batch_size=4, num_workers=2 * epoch)
        ids: list[int] = []
        for batch in loader:
            ids += [int(i) for i in batch.metadata["id"]]
            values = batch.t1.data.amax(dim=(1, 2, 3, 4)).tolist()
            assert values == [float(i) for i in batch.metadata["id"]], (values, batch.metadata)
        seen: list[object] = [None] * world
        dist.all_gather_object(seen, {"ids": ids, "len": len(queue), "rank": rank})
        report[epoch] = seen
    if rank == 0:
        with open(output, "w") as file:
            json.dump(report, file)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
