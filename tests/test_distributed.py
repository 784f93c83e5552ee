"""Data-parallel training under torchrun (gloo, CPU) equals one process with the same global batch.

The end-to-end test runs ``torchrun --nproc_per_node 2 -m imf_kg train`` and ``imf-kg train`` on Nations with
the same config (IMF structure-only: batch norm on, dropout off) and compares test metrics, the per-epoch
log and the selected parameters. A second torchrun job checks the pieces: global batch norm (outputs, input
and parameter gradients, running statistics; uneven shards and a zero-weight placeholder), sharded
evaluation, error propagation from rank 0, and a Trainer run with uneven shards, a one-example last batch
and an unused parameter against the same script run as one process.
"""

from __future__ import annotations

import copy
import json
import runpy
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from _launch import finish, subprocess_env, torchrun

from imf_kg.errors import ConfigError
from imf_kg.training import distributed
from imf_kg.training.distributed import shard_batch
from imf_kg.training.global_batch_norm import GlobalBatchNorm, use_global_batch_norm

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-4

NATIONS_CONFIG = """\
name: nations-ddp
data:
  dataset: nations
model:
  modalities: [structure]
  entity_dim: 16
  relation_dim: 16
  scorer_dropouts: [0.0, 0.0, 0.0]
  batch_norm: true
optim:
  lr: 0.01
  batch_size: 64        # 909 training queries: the last global batch (13) splits unevenly, 7 + 6
  eval_batch_size: 64
train:
  epochs: 3
  seed: 0
  device: cpu
  progress: false
  curve_min_interval_s: 0
"""


# ------------------------------------------------------------------------------------------ in-process
@pytest.mark.parametrize("size", [1, 2, 3, 7, 13])
@pytest.mark.parametrize("world_size", [2, 3])
def test_shards_are_contiguous_slices_of_the_global_batch(size, world_size):
    batch = torch.arange(size) * 10
    shards = [shard_batch(None, batch, rank, world_size) for rank in range(world_size)]
    real = [s for s in shards if not s.placeholder]
    assert torch.equal(torch.cat([s.batch for s in real]), batch)  # same order, nothing lost or repeated
    assert sum(s.weight for s in shards) == pytest.approx(1.0)
    assert all(s.weight == len(s.batch) / size for s in real)
    assert [len(s.batch) for s in real] == [len(p) for p in batch.tensor_split(world_size) if len(p)]
    for s in shards:
        if s.placeholder:  # an empty slice becomes one zero-weight example
            assert s.weight == 0.0 and torch.equal(s.batch, batch[:1])
    assert sum(s.placeholder for s in shards) == max(0, world_size - size)


def test_tuple_and_dict_batches_are_split_together():
    heads, tails = torch.arange(5), torch.arange(5) + 100
    shard = shard_batch(None, (heads, tails), 1, 2)
    assert torch.equal(shard.batch[0], heads[3:]) and torch.equal(shard.batch[1], tails[3:])
    shard = shard_batch(None, {"h": heads, "t": tails}, 0, 2)
    assert torch.equal(shard.batch["h"], heads[:3]) and torch.equal(shard.batch["t"], tails[:3])
    assert shard.weight == pytest.approx(3 / 5)
    with pytest.raises(ConfigError, match="shard_batch"):
        shard_batch(None, (heads, torch.arange(4)), 0, 2)  # no common first dimension
    with pytest.raises(ConfigError, match="shard_batch"):
        shard_batch(None, "not a tensor", 0, 2)


def test_a_task_may_shard_its_own_batches():
    class Task:
        def shard_batch(self, batch, rank, world_size):
            return batch[rank::world_size], 0.5

    shard = shard_batch(Task(), torch.arange(6), 1, 2)
    assert torch.equal(shard.batch, torch.tensor([1, 3, 5])) and shard.weight == 0.5 and not shard.placeholder


def test_global_batch_norm_keeps_parameters_and_equals_batch_norm_in_one_process():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Sequential(nn.BatchNorm1d(6, affine=False)))
    reference = copy.deepcopy(model)
    weight, running_mean = model[1].weight, model[1].running_mean
    optimizer_params = list(model.parameters())
    assert use_global_batch_norm(model) == 2
    assert isinstance(model[1], GlobalBatchNorm) and isinstance(model[2][0], GlobalBatchNorm)
    assert model[1].weight is weight and model[1].running_mean is running_mean  # optimiser still holds them
    assert list(model.parameters()) == optimizer_params
    assert model.state_dict().keys() == reference.state_dict().keys()
    x = torch.randn(9, 4)
    for mode in (True, False):  # without a process group: exactly nn.BatchNorm1d, in training and in eval
        model.train(mode), reference.train(mode)
        assert torch.equal(model(x), reference(x))
    assert torch.equal(model[1].running_var, reference[1].running_var)


def test_sharded_evaluation_without_a_process_group_is_the_evaluator():
    from imf_kg.data import load_kg
    from imf_kg.evaluation import evaluate_link_prediction
    from imf_kg.models.distmult import DistMult

    kg = load_kg("nations")
    torch.manual_seed(0)
    model = DistMult.from_kg(kg, dim=8)
    ours = distributed.evaluate_link_prediction(model, kg, "valid", progress=False, restrict_to=torch.arange(5))
    theirs = evaluate_link_prediction(model, kg, "valid", progress=False, restrict_to=torch.arange(5))
    assert ours["model"].to_dict() == theirs["model"].to_dict()


# ----------------------------------------------------------------------------------------- torchrun jobs
WORKER = r'''
import copy, json, sys
import torch
from torch import nn

from _launch import finish, subprocess_env, torchrun
from imf_kg.errors import RunDirExistsError, ToolkitError
from imf_kg.training import TrainConfig, Trainer, distributed as D
from imf_kg.training.global_batch_norm import placeholder_step, use_global_batch_norm

torch.set_num_threads(1)
out = sys.argv[1]
D.init_distributed("cpu")
rank, world = D.get_rank(), D.get_world_size()
report = {}


def close(a, b, tol=1e-5):
    return bool(torch.allclose(a, b, atol=tol, rtol=tol))


def averaged_grads(module):
    grads = []
    for p in module.parameters():
        g = p.grad.clone()
        if world > 1:
            torch.distributed.all_reduce(g)
            g /= world  # what DistributedDataParallel does
        grads.append(g)
    return grads


def batch_norm_step(rows, my_rows=None, weight=None, placeholder=False):
    """Global batch norm on this rank's rows (loss scaled as the trainer does) against BatchNorm1d on ``rows``."""
    torch.manual_seed(0)
    x, coef = torch.randn(7, 5) * 3 + 2, torch.rand(7, 5)
    ref = nn.BatchNorm1d(5)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5), ref.bias.uniform_(-1, 1)
    model = nn.Sequential(copy.deepcopy(ref))
    use_global_batch_norm(model)
    x_ref = x[rows].clone().requires_grad_()
    y_ref = ref(x_ref)
    ((y_ref - 1) ** 2 * coef[rows]).mean().backward()
    if my_rows is None:
        shard = D.shard_batch(None, torch.tensor(rows), rank, world)
        my_rows, weight = shard.batch.tolist(), shard.weight
    idx = torch.tensor(my_rows)
    xs = x[idx].clone().requires_grad_()
    with placeholder_step(placeholder):
        ys = model(xs)
    (((ys - 1) ** 2 * coef[idx]).mean() * weight * world).backward()
    grads, norm = averaged_grads(model), model[0]
    ok = close(torch.stack(grads), torch.stack([ref.weight.grad, ref.bias.grad]))
    ok &= close(norm.running_mean, ref.running_mean) and close(norm.running_var, ref.running_var)
    ok &= int(norm.num_batches_tracked) == int(ref.num_batches_tracked)
    if not placeholder:
        position = {r: i for i, r in enumerate(rows)}
        ref_rows = torch.tensor([position[int(r)] for r in idx])
        ok &= close(ys, y_ref[ref_rows]) and close(xs.grad / world, x_ref.grad[ref_rows])
    return bool(ok)


report["bn_uneven"] = batch_norm_step(list(range(7)))                     # shards of 4 and 3 rows
# rank 0 holds the whole batch; rank 1 only a zero-weight placeholder, which must change nothing
if rank == 0:
    report["bn_placeholder"] = batch_norm_step([0, 1, 2, 3], [0, 1, 2, 3], weight=1.0)
else:
    report["bn_placeholder"] = batch_norm_step([0, 1, 2, 3], [5], weight=0.0, placeholder=True)

# sharded evaluation gives the single-process metrics, also with fewer queries than ranks
from imf_kg.data import load_kg
from imf_kg.evaluation import evaluate_link_prediction
from imf_kg.models.distmult import DistMult

kg = load_kg("nations")
torch.manual_seed(0)
model = DistMult.from_kg(kg, dim=8)
same = True
for restrict in (None, torch.tensor([3])):
    sharded = D.evaluate_link_prediction(model, kg, "test", restrict_to=restrict, return_ranks=True,
                                         progress=False, batch_size=16)
    plain = evaluate_link_prediction(model, kg, "test", restrict_to=restrict, return_ranks=True,
                                     progress=False, batch_size=16)
    same &= sharded["model"].to_dict() == plain["model"].to_dict()
    same &= torch.equal(sharded["model"].ranks["realistic"], plain["model"].ranks["realistic"])
    same &= torch.equal(sharded["model"].query_index, plain["model"].query_index)
report["sharded_evaluation"] = bool(same)

# rank 0's errors reach every rank; results are shared
def refuse():
    raise RunDirExistsError("runs/x: the run folder exists")
try:
    D.on_main(refuse)
    report["on_main_error"] = "no error"
except RunDirExistsError as err:
    report["on_main_error"] = str(err)
report["on_main_value"] = D.on_main(lambda: D.get_rank() + 100)
report["main_first_value"] = D.main_first(lambda: D.get_rank() + 100)
try:
    D.check_same_across_ranks("probe", rank)
    report["check_same"] = "no error"
except ToolkitError as err:
    report["check_same"] = str(err)
D.check_same_across_ranks("probe", "equal")


# the Trainer: uneven shards, a one-example last batch (a placeholder on rank 1), an unused parameter
class Regression(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 1)
        self.unused = nn.Parameter(torch.zeros(2))


class Task:
    def __init__(self):
        g = torch.Generator().manual_seed(1)
        self.x, self.y = torch.randn(21, 3, generator=g), torch.randn(21, 1, generator=g)

    def train_batches(self, epoch, generator):
        yield from torch.randperm(21, generator=generator).split(5)  # 5, 5, 5, 5, 1

    def batch_size_of(self, batch):
        return len(batch)

    def training_step(self, model, batch):
        loss = ((model.linear(self.x[batch]) - self.y[batch]) ** 2).mean()
        return loss, {"mse": loss.detach()}

    def validate(self, model):
        return {"mse": float(((model.linear(self.x) - self.y) ** 2).mean())}


torch.manual_seed(0)
regression = Regression()
trainer = Trainer(regression, Task(), torch.optim.SGD(regression.parameters(), lr=0.1, momentum=0.5),
                  TrainConfig(epochs=3, device="cpu", seed=4, progress=False, metric="mse", mode="min"),
                  out + "/trainer-run")
result = trainer.fit()
report["trainer"] = {"weight": regression.linear.weight.tolist(), "bias": regression.linear.bias.tolist(),
                     "history": [{k: v for k, v in r.items() if k in ("train_loss", "train/mse", "valid/mse")}
                                 for r in result.history]}
json.dump(report, open(f"{out}/rank{rank}.json", "w"))
D.shutdown_distributed()
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_distributed_pieces_and_trainer_match_one_process(tmp_path, monkeypatch):
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER))
    (tmp_path / "ddp").mkdir()
    (tmp_path / "single").mkdir()
    # the two ranks get the variables torchrun would set (no launcher process: one torch import fewer)
    port = str(free_port())
    ranks = []
    for rank in (0, 1):
        env = dict(subprocess_env(), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        ranks.append(subprocess.Popen([sys.executable, str(script), str(tmp_path / "ddp")], env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    # meanwhile the same script runs here as one process (no process group): the reference
    monkeypatch.setattr(sys, "argv", [str(script), str(tmp_path / "single")])
    runpy.run_path(str(script), run_name="__main__")
    for process in ranks:
        code, out, err = finish(process)
        assert code == 0, err[-3000:]
    reports = [json.loads((tmp_path / "ddp" / f"rank{r}.json").read_text()) for r in (0, 1)]
    reference = json.loads((tmp_path / "single" / "rank0.json").read_text())
    for rank, report in enumerate(reports):
        assert report["bn_uneven"], f"rank {rank}: global batch norm differs from BatchNorm1d on the global batch"
        assert report["bn_placeholder"], f"rank {rank}: a placeholder shard changed batch-norm results"
        assert report["sharded_evaluation"], f"rank {rank}: sharded evaluation differs from one process"
        assert report["on_main_error"] == "runs/x: the run folder exists"
        assert report["on_main_value"] == 100 and report["main_first_value"] == 100 + rank
        assert "differs between rank 0 and rank(s) [1]" in report["check_same"]
    # every rank ends with the same parameters, equal to one process's
    assert reports[0]["trainer"] == reports[1]["trainer"]
    ours, theirs = reports[0]["trainer"], reference["trainer"]
    assert torch.allclose(torch.tensor(ours["weight"]), torch.tensor(theirs["weight"]), atol=1e-6)
    assert torch.allclose(torch.tensor(ours["bias"]), torch.tensor(theirs["bias"]), atol=1e-6)
    for mine, single in zip(ours["history"], theirs["history"], strict=True):
        assert mine.keys() == single.keys()
        for key in mine:
            assert mine[key] == pytest.approx(single[key], abs=1e-6), key
    # only rank 0 wrote the run folder: one record per epoch
    lines = (tmp_path / "ddp" / "trainer-run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_torchrun_training_matches_one_process_on_nations(tmp_path, capsys):
    from imf_kg.cli import run as imf_kg

    config = tmp_path / "nations.yaml"
    config.write_text(NATIONS_CONFIG)
    arguments = ["train", "--config", str(config), "--no-progress"]
    ddp = subprocess.Popen(torchrun(2, "-m", "imf_kg", *arguments, "--run-dir", str(tmp_path / "ddp")),
                           env=subprocess_env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # meanwhile the single-process reference runs here (the same command, one torch import fewer)
    assert imf_kg([*arguments, "--run-dir", str(tmp_path / "single")]) == 0
    code, out, err = finish(ddp)
    assert code == 0, err[-3000:]
    assert out.count("run folder:") == 1  # only rank 0 reports

    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    assert sorted(p.name for p in ddp_dir.rglob("*")) == sorted(p.name for p in single_dir.rglob("*"))
    ddp_test = json.loads((ddp_dir / "results.json").read_text())["test"]
    single_test = json.loads((single_dir / "results.json").read_text())["test"]
    assert ddp_test.keys() == single_test.keys()
    for output in single_test:
        assert ddp_test[output]["num_queries"] == single_test[output]["num_queries"]
        for side in ("both", "head", "tail"):
            for metric, value in single_test[output]["realistic"][side].items():
                assert ddp_test[output]["realistic"][side][metric] == pytest.approx(value, abs=TOLERANCE), \
                    (output, side, metric)

    ddp_log = [json.loads(line) for line in (ddp_dir / "metrics.jsonl").read_text().splitlines()]
    single_log = [json.loads(line) for line in (single_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in ddp_log] == [1, 2, 3]  # one writer
    for mine, theirs in zip(ddp_log, single_log, strict=True):
        assert mine["queries"] == theirs["queries"] == 909 and mine["batches"] == theirs["batches"]
        for key in ("train_loss", "valid/mrr", "valid/hits@1", "valid/hits@10"):
            assert mine[key] == pytest.approx(theirs[key], abs=TOLERANCE), key

    ddp_state = torch.load(ddp_dir / "checkpoints" / "best.pt", weights_only=True)
    single_state = torch.load(single_dir / "checkpoints" / "best.pt", weights_only=True)
    assert ddp_state.keys() == single_state.keys()  # global batch norm keeps the checkpoint layout
    assert any("running_mean" in key for key in single_state)
    for key, value in single_state.items():
        assert torch.allclose(ddp_state[key].float(), value.float(), atol=TOLERANCE), key
