"""Multi-process training through ``torchrun`` (DistributedDataParallel, gloo on CPU): two ranks end with
identical weights, only rank 0 writes the run's files, and validation scores are gathered from both ranks
(every validation item scored exactly once)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sibnet.data.synthetic import make_synthetic_emotic

REPO = Path(__file__).resolve().parents[1]


def _torchrun(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        # Two processes on a small machine: one thread each (torchrun's own default), no oversubscription.
        "OMP_NUM_THREADS": "1",
        "SIBNET_OFFLINE": "1",
    }
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
        "-m", "sibnet.train", *args,
    ]  # fmt: skip
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540)


def test_two_gloo_ranks_end_with_identical_weights(tmp_path: Path):
    root = tmp_path / "emotic"
    # 9 validation people: DistributedSampler pads the two shards to 5 + 5, so one item is scored twice and
    # must be counted once.
    make_synthetic_emotic(root, n_train=8, n_val=8, n_test=2, size=96, seed=3, write_csv=False)
    out = tmp_path / "runs"
    args = [
        "--dataset", "emotic", "--data-root", str(root), "--model", "sibnet", "--out", str(out),
        "--no-pretrained", "--input-size", "32", "--batch-size", "4", "--epochs", "2",
        "--max-steps-per-epoch", "2", "--workers", "0", "--no-progress", "--device", "cpu", "--write-digests",
        "--seeds", "0",
        # dC = C: a smaller ICM, so a third less checkpoint to write per epoch; the DDP plumbing is the same.
        "--icm-expansion", "1",
    ]  # fmt: skip
    proc = _torchrun(args, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    seed_dir = out / "emotic-sibnet" / "seed0"
    digests = [json.loads((seed_dir / f"digest-rank{r}.json").read_text()) for r in (0, 1)]
    assert [d["rank"] for d in digests] == [0, 1] and all(d["world_size"] == 2 for d in digests)
    assert digests[0]["parameters"] == digests[1]["parameters"]
    assert digests[0]["buffers"] == digests[1]["buffers"]

    # Only rank 0 writes the run's files (the digests are the documented exception).
    assert sorted(p.name for p in seed_dir.iterdir()) == [
        "best", "digest-rank0.json", "digest-rank1.json", "last.pt", "metrics.jsonl",
    ]  # fmt: skip
    log = [json.loads(line) for line in (seed_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    from sibnet.data.emotic import EmoticDataset
    from sibnet.data.masking import InputTransform

    n_val = len(EmoticDataset(root, "val", transform=InputTransform(32, 33)))
    assert n_val % 2 == 1, "the split should not divide evenly over two ranks"
    assert all(r["val"]["n"] == n_val for r in log)
    # Global batch 4 = 2 per rank; samples count both ranks.
    assert all(r["samples"] == 2 * 4 for r in log)
    assert proc.stdout.count("epoch 2/2") == 1, "only rank 0 prints"
    summary = json.loads((out / "emotic-sibnet" / "summary.json").read_text())
    assert summary["seeds"][0]["test"] is not None


@pytest.mark.slow
def test_ddp_with_branch_heads_unused_by_the_loss(tmp_path: Path):
    """A BCM model trained with ``--bcm none``: its branch heads get no gradient, which DDP must be told."""
    root = tmp_path / "emotic"
    make_synthetic_emotic(root, n_train=8, n_val=3, n_test=2, size=96, seed=4, write_csv=False)
    args = [
        "--dataset", "emotic", "--data-root", str(root), "--model", "concat_bcm", "--bcm", "none",
        "--out", str(tmp_path / "runs"), "--no-pretrained", "--input-size", "32", "--batch-size", "4",
        "--epochs", "1", "--max-steps-per-epoch", "2", "--workers", "0", "--no-progress", "--device", "cpu",
        "--write-digests", "--no-test", "--seeds", "0",
    ]  # fmt: skip
    proc = _torchrun(args, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    seed_dir = next((tmp_path / "runs").iterdir()) / "seed0"
    digests = [json.loads((seed_dir / f"digest-rank{r}.json").read_text()) for r in (0, 1)]
    assert digests[0]["parameters"] == digests[1]["parameters"]
