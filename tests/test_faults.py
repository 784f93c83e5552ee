"""Faults: a training process killed with SIGKILL resumes to the uninterrupted result; files are never half
written; an existing run folder is refused without --overwrite; two processes can build one cache entry."""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from _launch import finish, subprocess_env

REPO = Path(__file__).resolve().parents[1]

# dropout on: the resumed run must also restore every random-number state to end where the uninterrupted one does
FAULT_CONFIG = """\
name: nations-faults
data:
  dataset: nations
model:
  modalities: [structure]
  entity_dim: 16
  relation_dim: 16
  scorer_dropouts: [0.2, 0.2, 0.2]
optim:
  lr: 0.01
  batch_size: 64
train:
  epochs: {epochs}
  eval_every: 2
  seed: 5
  device: cpu
  progress: false
"""
TIMING_KEYS = ("time_s", "per_s")


def train_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "imf_kg", "train", "--no-progress", *arguments]


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 240, poll_s: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(f"the training process ended (exit {process.returncode}) before writing {path}: "
                        f"{process.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{path} did not appear within {timeout} s")
        time.sleep(poll_s)


def child_processes(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (from /proc), in increasing order."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return sorted(children)


def comparable_log(run_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.endswith(TIMING_KEYS)} for r in records]


# ------------------------------------------------------------------------------------------ SIGKILL + resume
def test_sigkill_mid_training_then_resume_ends_like_an_uninterrupted_run(tmp_path, capsys):
    from imf_kg.cli import run as imf_kg

    epochs = 5
    config = tmp_path / "config.yaml"
    config.write_text(FAULT_CONFIG.format(epochs=epochs))
    full_dir, killed_dir = tmp_path / "full", tmp_path / "killed"
    env = subprocess_env()
    full = subprocess.Popen(train_command("--config", str(config), "--run-dir", str(full_dir)), env=env,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    killed = subprocess.Popen(train_command("--config", str(config), "--run-dir", str(killed_dir)), env=env,
                              text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    last = killed_dir / "checkpoints" / "last.pt"
    wait_for(last, killed)
    killed.send_signal(signal.SIGKILL)  # in the middle of the next epoch: no handler, no cleanup
    code, _, _ = finish(killed)
    assert code == -signal.SIGKILL
    assert not (killed_dir / "results.json").exists()  # it really was interrupted
    state = torch.load(last, weights_only=True)  # the checkpoint on disk is complete
    assert 1 <= state["epoch"] < epochs

    assert imf_kg(["train", "--resume", str(killed_dir), "--no-progress"]) == 0
    code, _, err = finish(full)
    assert code == 0, err[-3000:]

    full_results = json.loads((full_dir / "results.json").read_text())
    resumed_results = json.loads((killed_dir / "results.json").read_text())
    assert resumed_results["test"] == full_results["test"]  # CPU, fixed seed: the same numbers exactly
    assert resumed_results["runs"]["imf"]["best_epoch"] == full_results["runs"]["imf"]["best_epoch"]
    assert comparable_log(killed_dir) == comparable_log(full_dir)  # one record per epoch, none doubled
    full_best = torch.load(full_dir / "checkpoints" / "best.pt", weights_only=True)
    resumed_best = torch.load(killed_dir / "checkpoints" / "best.pt", weights_only=True)
    assert all(torch.equal(full_best[k], resumed_best[k]) for k in full_best)
    assert not list((killed_dir / "checkpoints").glob(".*.tmp"))


def test_a_process_killed_while_writing_leaves_the_previous_file_intact(tmp_path):
    """SIGKILL in the middle of an atomic write: the old file stays whole; the temporary file is cleaned up."""
    from imf_kg.training.checkpoint import remove_temporary_files

    target, started = tmp_path / "last.pt", tmp_path / "writing"
    target.write_bytes(b"old complete checkpoint")
    writer = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from imf_kg.io import _atomic_write

        def write(handle):
            handle.write(b"new, half writ")
            handle.flush()
            Path({str(started)!r}).touch()
            time.sleep(60)  # killed here, before the rest, the fsync and the rename
            handle.write(b"ten checkpoint")

        _atomic_write({str(target)!r}, write)
    """)
    process = subprocess.Popen([sys.executable, "-c", writer], env=subprocess_env(), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(started, process, timeout=60)
    process.send_signal(signal.SIGKILL)
    finish(process)
    assert target.read_bytes() == b"old complete checkpoint"
    leftovers = list(tmp_path.glob(".last.pt.*.tmp"))
    assert len(leftovers) == 1 and leftovers[0].read_bytes() == b"new, half writ"
    assert remove_temporary_files(tmp_path) == leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "writing"]


def direct_writes(source: str) -> list[tuple[int, str]]:
    """Calls that write a file directly: ``torch.save``/``np.save``/``savefig`` to anything but an in-memory
    buffer or the handle an atomic-write callback receives, ``open`` for writing, ``write_text/bytes``."""
    tree = ast.parse(source)
    buffers = {  # names bound to io.BytesIO() and parameters of callbacks (the atomic writer's handle)
        target.id for node in ast.walk(tree) if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Call) and ast.unparse(node.value.func).endswith("BytesIO")
        for target in node.targets if isinstance(target, ast.Name)
    } | {arg.arg for node in ast.walk(tree) if isinstance(node, ast.Lambda) for arg in node.args.args}

    def to_buffer(arg) -> bool:
        return isinstance(arg, ast.Name) and arg.id in buffers

    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        args = node.args
        if name == "torch.save" and not (len(args) > 1 and to_buffer(args[1])):
            found.append((node.lineno, name))
        elif name in ("np.save", "np.savez", "np.savez_compressed", "numpy.save") and not (
                args and to_buffer(args[0])):
            found.append((node.lineno, name))
        elif name.endswith(".savefig") and not (args and to_buffer(args[0])):
            found.append((node.lineno, name))
        elif name.endswith((".write_text", ".write_bytes")):
            found.append((node.lineno, name))
        elif name in ("open", "io.open") or name.endswith(".open"):
            modes = [a for a in args[1:2]] + [k.value for k in node.keywords if k.arg == "mode"]
            if any(isinstance(m, ast.Constant) and isinstance(m.value, str) and set(m.value) & set("wax+")
                   for m in modes):
                found.append((node.lineno, name))
    return found


def test_the_writer_audit_catches_direct_writes():
    assert [n for _, n in direct_writes("torch.save(state, path)\nfig.savefig(path)\nopen(p, 'w')")] == \
        ["torch.save", "fig.savefig", "open"]
    assert direct_writes("b = io.BytesIO()\nfig.savefig(b)\nw(lambda handle: np.save(handle, x))\n"
                         "open(p, 'rb')\nopen(p)") == []


def test_every_file_writer_goes_through_the_atomic_helpers():
    """No file in the package is written except through imf_kg/io.py (tmp file + fsync + rename)."""
    offenders = []
    for folder in ("imf_kg", "node_tasks"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if path == REPO / "imf_kg" / "io.py":
                continue  # the atomic helpers themselves (and append_jsonl, whose torn last line is skipped)
            for line, call in direct_writes(path.read_text(encoding="utf-8")):
                offenders.append(f"{path.relative_to(REPO)}:{line}: {call}")
    assert not offenders, "direct file writes:\n" + "\n".join(offenders)



def test_atomic_writes_get_the_mode_a_plain_open_gives(tmp_path):
    """mkstemp creates 0600; results must be readable as any file the user writes (umask), and a rewrite keeps
    the mode the user gave the file."""
    from imf_kg.io import atomic_write_text

    old = os.umask(0o022)
    try:
        fresh = atomic_write_text(tmp_path / "table.md", "a\n")
        assert fresh.stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        assert atomic_write_text(tmp_path / "private.md", "b\n").stat().st_mode & 0o777 == 0o600
        fresh.chmod(0o640)
        atomic_write_text(fresh, "c\n")
        assert fresh.stat().st_mode & 0o777 == 0o640 and fresh.read_text() == "c\n"
    finally:
        os.umask(old)


# ------------------------------------------------------------------------------------------ run folder
def test_existing_run_folder_is_refused_without_overwrite(tmp_path, capsys):
    from imf_kg.cli import run as imf_kg

    config = tmp_path / "config.yaml"
    config.write_text(FAULT_CONFIG.format(epochs=1))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.json").write_text('{"precious": true}')
    process = subprocess.run(train_command("--config", str(config), "--run-dir", str(run_dir)),
                             env=subprocess_env(), text=True, capture_output=True, timeout=300)
    assert process.returncode == 2
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in process.stderr, process.stderr
    assert lines[0].startswith("imf-kg: error:") and str(run_dir) in lines[0] and "--overwrite" in lines[0]
    assert sorted(p.name for p in run_dir.iterdir()) == ["results.json"]  # untouched
    assert (run_dir / "results.json").read_text() == '{"precious": true}'
    # a folder that is not a run cannot be resumed: the same kind of one-line error
    assert imf_kg(["train", "--resume", str(run_dir), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("imf-kg: error:") and err.count("\n") == 1


# ------------------------------------------------------------------------------------------ feature cache
CACHE_BUILDER = r"""
import hashlib, importlib.util, json, sys, time
from pathlib import Path
import numpy as np

spec = importlib.util.spec_from_file_location("feature_cache", sys.argv[1])  # without the encoders' heavy imports
cache_module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cache_module)
folder, me, others = Path(sys.argv[2]), sys.argv[3], sys.argv[4].split(",")
cache = cache_module.FeatureCache(folder / "cache")
parts = {"model": "shared-model", "texts": "abc"}


def compute():
    # both processes get here before either stores: they really build the same entry at the same time
    (folder / f"computing-{me}").touch()
    deadline = time.monotonic() + 120
    while not all((folder / f"computing-{o}").exists() for o in others):
        if time.monotonic() > deadline:
            raise SystemExit("the other builder never started")
        time.sleep(0.005)
    return np.arange(2_000_000, dtype=np.float64).reshape(2000, 1000) * 0.5


values, hit = cache.get_or_compute("text", parts, compute, rows=2000)
reloaded = cache.load("text", parts, rows=2000)
print(json.dumps({"hit": hit, "built": hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest(),
                  "cached": hashlib.sha256(np.ascontiguousarray(reloaded).tobytes()).hexdigest(),
                  "dtype": str(values.dtype), "shape": list(values.shape)}))
"""

CACHE_READER = r"""
import importlib.util, sys, time
from pathlib import Path
import numpy as np

spec = importlib.util.spec_from_file_location("feature_cache", sys.argv[1])
cache_module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cache_module)
folder = Path(sys.argv[2])
cache = cache_module.FeatureCache(folder / "cache")
expected = (np.arange(2_000_000, dtype=np.float64).reshape(2000, 1000) * 0.5).astype(np.float32)
seen = misses = 0
deadline = time.monotonic() + 120
while seen < 20 and time.monotonic() < deadline:
    entry = cache.load("text", {"model": "shared-model", "texts": "abc"}, rows=2000)
    if entry is None:
        misses += 1
        time.sleep(0.002)
        continue
    assert np.array_equal(entry, expected), "a reader saw an incomplete or wrong entry"
    seen += 1
print(seen, misses)
"""


def test_two_processes_building_one_cache_entry_both_get_the_complete_result(tmp_path):
    import hashlib

    import numpy as np

    cache_py = str(REPO / "imf_kg" / "encoders" / "cache.py")
    builder, reader = tmp_path / "builder.py", tmp_path / "reader.py"
    builder.write_text(CACHE_BUILDER)
    reader.write_text(CACHE_READER)
    env = subprocess_env()
    processes = [
        subprocess.Popen([sys.executable, str(builder), cache_py, str(tmp_path), me, other], env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for me, other in (("a", "b"), ("b", "a"))
    ]
    watcher = subprocess.Popen([sys.executable, str(reader), cache_py, str(tmp_path)], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reports = []
    for process in processes:
        code, out, err = finish(process, timeout=180)
        assert code == 0, err[-3000:]
        reports.append(json.loads(out))
    code, out, err = finish(watcher, timeout=180)
    assert code == 0, err[-3000:]  # it never saw a partial entry
    assert int(out.split()[0]) == 20

    expected = (np.arange(2_000_000, dtype=np.float64).reshape(2000, 1000) * 0.5).astype(np.float32)
    digest = hashlib.sha256(expected.tobytes()).hexdigest()
    for report in reports:
        assert report["hit"] is False  # both built it
        assert report["built"] == report["cached"] == digest
        assert report["dtype"] == "float32" and report["shape"] == [2000, 1000]
    entries = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(entries) == 2 and entries[0].endswith(".json") and entries[1].endswith(".npy")  # no temp files
    stored = np.load(tmp_path / "cache" / entries[1], allow_pickle=False)
    np.testing.assert_array_equal(stored, expected)
    assert json.loads((tmp_path / "cache" / entries[0]).read_text())["shape"] == [2000, 1000]


# ------------------------------------------------------------------------------------------ data parallel
@pytest.mark.slow
def test_killed_torchrun_job_resumes_on_every_rank_to_the_single_process_result(tmp_path, capsys):
    """torchrun with 2 processes, SIGKILL to the whole job after its first checkpoint, resume with torchrun:
    the result equals one uninterrupted process (dropout off, so data parallelism is exact)."""
    from imf_kg.cli import run as imf_kg

    config = tmp_path / "config.yaml"
    config.write_text(FAULT_CONFIG.format(epochs=6).replace("[0.2, 0.2, 0.2]", "[0.0, 0.0, 0.0]"))
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"

    def torchrun(*arguments):
        return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                 "--nproc_per_node=2", "-m", "imf_kg", "train", "--no-progress", *arguments],
                                env=subprocess_env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)

    job = torchrun("--config", str(config), "--run-dir", str(ddp_dir))
    wait_for(ddp_dir / "checkpoints" / "last.pt", job)
    workers = child_processes(job.pid)  # torchrun starts each rank in a session of its own
    assert len(workers) == 2
    os.kill(workers[-1], signal.SIGKILL)  # one rank dies mid-epoch; torchrun then stops the other and fails
    code, _, _ = finish(job)
    for pid in child_processes(job.pid):  # pragma: no cover - only if torchrun left a rank behind
        os.kill(pid, signal.SIGKILL)
    assert code != 0 and not (ddp_dir / "results.json").exists()
    resumed = torchrun("--resume", str(ddp_dir))
    assert imf_kg(["train", "--config", str(config), "--run-dir", str(single_dir), "--no-progress"]) == 0
    code, out, err = finish(resumed)
    assert code == 0, err[-3000:]
    ddp_test = json.loads((ddp_dir / "results.json").read_text())["test"]
    single_test = json.loads((single_dir / "results.json").read_text())["test"]
    for output, metrics in single_test.items():
        for metric, value in metrics["realistic"]["both"].items():
            assert ddp_test[output]["realistic"]["both"][metric] == pytest.approx(value, abs=1e-4)
    assert [r["epoch"] for r in comparable_log(ddp_dir)] == list(range(1, 7))
