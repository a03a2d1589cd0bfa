"""The training loop: schedule, exact resume, and DDP (2 gloo processes == 1 process, doubled batch)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from near_blender.train.schedule import warmup_cosine
from near_blender.train.trainer import ItemRandom, TrainConfig, Trainer


def test_warmup_then_cosine():
    assert warmup_cosine(0, 10, 110) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 110) == pytest.approx(1.0)
    assert warmup_cosine(60, 10, 110) == pytest.approx(0.5)  # half way through the cosine
    assert warmup_cosine(110, 10, 110, min_ratio=0.1) == pytest.approx(0.1)


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2))

    def forward(self, x):
        return self.net(x)


def toy_data(n=24):
    g = torch.Generator().manual_seed(123)
    x = torch.randn(n, 4, generator=g)
    y = torch.stack([x[:, 0] * x[:, 1], x[:, 2].sin()], 1)
    return [(x[i], y[i]) for i in range(n)]


def collate(items):
    return torch.stack([a for a, _ in items]), torch.stack([b for _, b in items])


def step_fn(model, batch, rand):
    x, y = batch
    x = x + 0.01 * rand.randn(4)  # per-sample randomness must survive resumes and DDP
    return {"total": ((model(x) - y) ** 2).mean()}


def make(out, steps=20, batch=4, **kw):
    torch.manual_seed(0)
    cfg = TrainConfig(max_steps=steps, batch_size=batch, lr=1e-2, warmup_steps=3, ckpt_every=1000, log_every=1,
                      ema_decay=0.9, **kw)  # fmt: skip
    return Trainer(Toy(), toy_data(), step_fn, cfg, out, collate=collate)


def test_resume_equals_straight_run(tmp_path):
    a = make(tmp_path / "a")
    a.fit(progress=False)
    b = make(tmp_path / "b")
    b.fit(progress=False, stop_at=10)  # stops and checkpoints at step 10
    c = make(tmp_path / "b")  # a new process would start like this
    c.fit(progress=False)  # resumes from step 10
    assert c.step == 20
    for (n, p), q in zip(a.model.state_dict().items(), c.model.state_dict().values()):
        assert torch.allclose(p, q, atol=1e-6), n
    for p, q in zip(a.ema.model.state_dict().values(), c.ema.model.state_dict().values()):
        assert torch.allclose(p, q, atol=1e-6)
    assert len((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()) == 20
    rand = ItemRandom(list(range(24)))
    loss_first = float(step_fn(a.model, collate(toy_data()), rand)["total"])
    untrained = float(step_fn(Toy(), collate(toy_data()), ItemRandom(list(range(24))))["total"])
    assert loss_first < untrained  # it did learn something


def test_ddp_two_processes_equal_one_process_with_double_batch(tmp_path):
    """`torchrun --nproc_per_node 2` (gloo on CPU), batch 2 per process == 1 process, batch 4."""
    single = make(tmp_path / "single", steps=8, batch=4)
    single.fit(progress=False)
    script = tmp_path / "ddp_train.py"
    script.write_text(
        "import sys, torch\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})\n"
        "from tests.train.test_trainer import make\n"
        "from near_blender.train.trainer import dist_info, init_distributed_from_env, shutdown_distributed\n"
        "torch.set_num_threads(1)\n"
        "init_distributed_from_env('gloo')\n"
        "t = make(sys.argv[1], steps=8, batch=2)\n"
        "t.fit(progress=False)\n"
        "if dist_info()[0] == 0:\n"
        "    torch.save(t.model.state_dict(), sys.argv[1] + '/final.pt')\n"
        "t.close()\n"
        "shutdown_distributed()\n"
    )
    out = tmp_path / "ddp"
    out.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
         str(script), str(out)],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    got = torch.load(out / "final.pt")
    for k, v in single.model.state_dict().items():
        assert torch.allclose(v, got[k], atol=1e-5), k


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_checkpoints_the_current_step_and_the_run_resumes(tmp_path):
    """``kill`` (SIGTERM) mid-run saves a checkpoint at the step reached; rerunning finishes the
    run with the same weights as an uninterrupted one."""
    import signal

    t = make(tmp_path / "t", steps=20)

    def step_then_kill(model, batch, rand):
        if t.step == 7:  # the 8th step: raise SIGTERM in this process, as `kill PID` would
            os.kill(os.getpid(), signal.SIGTERM)
        return step_fn(model, batch, rand)

    t.step_fn = step_then_kill
    with pytest.raises(KeyboardInterrupt):
        t.fit(progress=False)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is removed again
    st = torch.load(tmp_path / "t" / "checkpoints" / "last.pt", weights_only=True)  # plain data only
    assert st["step"] == 7  # the interrupted 8th step is redone on resume
    resumed = make(tmp_path / "t", steps=20)
    resumed.fit(progress=False)
    straight = make(tmp_path / "s", steps=20)
    straight.fit(progress=False)
    for p, q in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.allclose(p, q, atol=1e-6)


def test_atomic_writes_leave_readable_files(tmp_path):
    from near_blender.utils.atomic import atomic_write_text

    atomic_write_text(tmp_path / "a.json", "{}")
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


class _Payload:
    """Unpickling this creates a file: the stand-in for code planted in a checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_planted_pickle_payload_in_a_checkpoint_is_refused_without_running(tmp_path):
    from near_blender import NearError

    t = make(tmp_path / "t", steps=3)
    t.fit(progress=False)
    ckpt = tmp_path / "t" / "checkpoints" / "last.pt"
    st = torch.load(ckpt, weights_only=True)  # what we write is plain data
    marker = tmp_path / "ran"
    st["step"] = _Payload(marker)
    torch.save(st, ckpt)
    again = make(tmp_path / "t", steps=5)
    with pytest.raises(NearError, match="nothing in it was run"):
        again.load_checkpoint()
    assert not marker.exists()


def test_stage1_zs_cache_is_safetensors_and_a_pickle_is_refused(tmp_path):
    import numpy as np

    from near_blender import NearError
    from near_blender.train.stage1 import load_zs, save_zs

    zs = {"asset_1/view_000.png": np.arange(12, dtype=np.float32).reshape(3, 4)}
    save_zs(tmp_path / "z_s.safetensors", zs)
    back = load_zs(tmp_path / "z_s.safetensors")
    assert list(back) == list(zs) and np.array_equal(back["asset_1/view_000.png"], zs["asset_1/view_000.png"])
    assert load_zs(tmp_path / "none.safetensors") == {}
    marker = tmp_path / "ran"
    torch.save({"asset_1/view_000.png": _Payload(marker)}, tmp_path / "planted.safetensors")
    with pytest.raises(NearError, match="delete it"):
        load_zs(tmp_path / "planted.safetensors")
    assert not marker.exists()
