"""``torchrun -m node_tasks train``: data-parallel node classification (node_tasks/distributed.py).

Full-batch training under two gloo processes equals one process (dropout off); mini-batch training cuts the
same global batches on every rank, each rank training on its own slice; only rank 0 writes files.
"""

from __future__ import annotations

import json
import subprocess

import pytest
import torch

from _launch import subprocess_env, torchrun
from node_tasks.distributed import full_graph_batches, rank_seed_batches

TOLERANCE = 1e-4
CONFIG = """
dataset: synthetic
data_options: {seed: 3, nodes: {paper: 90, author: 60, venue: 8}}
model: {name: ima, hidden: 8, heads: 2, layers: 2, dropout: 0.0, gate_dropout: [0.0, 0.0]}
optim: {lr: 0.01, weight_decay: 0.0, schedule: constant}
train: {epochs: 4, device: cpu, seed: 0, metric: macro_f1, mode: max, progress: false}
"""


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("batch_size", [4, 5])
def test_ranks_cut_the_same_global_batches_and_split_each(world_size, batch_size):
    nodes = torch.arange(10, 21)
    single = [b.batch for b in rank_seed_batches(nodes, batch_size, torch.Generator().manual_seed(7), 0, 1,
                                                 lambda seeds: seeds)]
    parts = [list(rank_seed_batches(nodes, batch_size, torch.Generator().manual_seed(7), rank, world_size,
                                    lambda seeds: seeds)) for rank in range(world_size)]
    assert sorted(torch.cat(single).tolist()) == nodes.tolist()
    for step, global_batch in enumerate(single):
        shares = [ranks[step] for ranks in parts]
        real = [s.batch for s in shares if s.weight > 0]
        assert torch.equal(torch.cat(real), global_batch)  # contiguous slices, in rank order
        assert sum(s.weight for s in shares) == pytest.approx(1.0)
        assert all(s.global_size == len(global_batch) for s in shares)
        for share in shares:
            if share.weight == 0:  # more ranks than seeds: one seed, weight 0, so the rank still steps
                assert torch.equal(share.batch, global_batch[:1])
            else:
                assert share.weight == pytest.approx(len(share.batch) / len(global_batch))
    assert full_graph_batches(90, 4)[0].weight == 0.25


def test_full_batch_torchrun_matches_one_process(tmp_path):
    from node_tasks.cli import main as node_tasks

    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG)
    arguments = ["train", "--config", str(config), "--threads", "1"]
    ddp = subprocess.Popen(torchrun(2, "-m", "node_tasks", *arguments, "--run-dir", str(tmp_path / "ddp")),
                           env=subprocess_env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert node_tasks([*arguments, "--run-dir", str(tmp_path / "single")]) == 0
    out, err = ddp.communicate(timeout=300)
    assert ddp.returncode == 0, err[-3000:]
    assert out.count("run folder:") == 1  # only rank 0 reports

    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    assert sorted(p.name for p in ddp_dir.rglob("*")) == sorted(p.name for p in single_dir.rglob("*"))
    ddp_record = json.loads((ddp_dir / "results.json").read_text())
    single_record = json.loads((single_dir / "results.json").read_text())
    for key in ("micro_f1", "macro_f1", "val_macro_f1", "best_epoch"):
        assert ddp_record[key] == pytest.approx(single_record[key], abs=TOLERANCE), key
    ddp_log = [json.loads(line) for line in (ddp_dir / "metrics.jsonl").read_text().splitlines()]
    single_log = [json.loads(line) for line in (single_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in ddp_log] == [1, 2, 3, 4]  # one writer
    for mine, theirs in zip(ddp_log, single_log, strict=True):
        assert mine["nodes"] == theirs["nodes"]
        assert mine["train_loss"] == pytest.approx(theirs["train_loss"], abs=TOLERANCE)
    ddp_state = torch.load(ddp_dir / "checkpoints" / "best.pt", weights_only=True)
    single_state = torch.load(single_dir / "checkpoints" / "best.pt", weights_only=True)
    for key, value in single_state.items():
        assert torch.allclose(ddp_state[key].float(), value.float(), atol=TOLERANCE), key


def test_mini_batch_torchrun_trains_every_seed_once_per_epoch(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG + "mini_batch: {batch_size: 16, num_neighbors: [4, 4]}\n")
    run = subprocess.run(torchrun(2, "-m", "node_tasks", "train", "--config", str(config), "--threads", "1",
                                   "--run-dir", str(tmp_path / "ddp")),
                         env=subprocess_env(), text=True, capture_output=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("run folder:") == 1
    log = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    record = json.loads((tmp_path / "ddp" / "results.json").read_text())
    train_nodes = log[0]["nodes"]
    assert all(r["nodes"] == train_nodes for r in log) and log[0]["batches"] == -(-train_nodes // 16)
    assert 0.0 <= record["micro_f1"] <= 1.0 and all(torch.isfinite(torch.tensor(r["train_loss"])) for r in log)
