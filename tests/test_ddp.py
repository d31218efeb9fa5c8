import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_ddp_ranks_see_disjoint_shares_of_every_epoch(cifar10_dir, tmp_path):
    script = Path(__file__).with_name("ddp_shards.py")
    r = subprocess.run(
        [sys.executable, str(script), str(cifar10_dir), str(tmp_path)], capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2)]
    assert all(rank["world_size"] == 2 for rank in ranks)
    for epoch in ("0", "1"):
        a, b = (set(rank["seen"][epoch]) for rank in ranks)
        assert len(a) == len(b) == 100 and not a & b  # 200 images split in two halves
        assert ranks[0]["batches"] == 100 // 20
    assert ranks[0]["seen"]["0"] != ranks[0]["seen"]["1"]  # reshuffled each epoch
