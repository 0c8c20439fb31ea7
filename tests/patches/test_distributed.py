"""Distributed training for real: ``torchrun`` with two ``gloo`` processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

SCRIPT = Path(__file__).with_name("distributed_queue_script.py")


def test_torchrun_two_ranks_split_subjects_without_duplicates(tmp_path: Path) -> None:
    output = tmp_path / "seen.json"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(SCRIPT),
        str(output),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(output.read_text())
    assignments = []
    for epoch in ("0", "1"):
        ranks = report[epoch]
        assert [r["rank"] for r in ranks] == [0, 1]
        per_rank = [Counter(r["ids"]) for r in ranks]
        for counts, seen in zip(per_rank, ranks, strict=True):
            # len(subject_sampler) * patches_per_volume, and exactly that many patches
            assert seen["len"] == 5 * 3 == sum(counts.values())
            assert set(counts.values()) == {3}
        subjects = [set(counts) for counts in per_rank]
        assert subjects[0].isdisjoint(subjects[1])  # no subject on both ranks
        assert subjects[0] | subjects[1] == set(range(10))  # together, all of them
        assignments.append(subjects[0])
    assert assignments[0] != assignments[1]  # set_epoch reshuffles the split
