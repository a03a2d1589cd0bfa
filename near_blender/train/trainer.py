"""A small, exact-resume training loop shared by both stages (single process or ``torchrun`` DDP).

What it guarantees:

* **Deterministic data order** independent of any RNG state: epoch ``e`` visits the dataset in
  ``randperm(n, seed(seed, e))`` order; the global batch ``g`` is items ``[g * G, (g + 1) * G)`` of
  the concatenated epochs (``G`` = per-process batch x world size); rank ``r`` takes its slice.
* **Deterministic randomness per sample**: the step function gets an :class:`ItemRandom` whose
  stream for each batch item is seeded from (seed, step, global item position), for noise,
  timesteps and augmentation: a resumed run, or a run on more processes, draws the same numbers.
* **Exact resume**: model, optimizer, scheduler, EMA, step and the global RNG states are saved
  atomically to ``OUT/checkpoints/last.pt`` every ``ckpt_every`` steps, on Ctrl-C and on cancel;
  training N steps straight equals N/2 + resume + N/2 (tested).
* **DDP**: with ``torchrun`` (env ``WORLD_SIZE > 1``) gradients are averaged across processes, so
  2 processes x batch B equal 1 process x batch 2B (tested with gloo on CPU).
* **Logging**: a progress bar (rank 0), ``OUT/metrics.jsonl`` (one JSON object per logged step,
  truncated to the resumed step on resume), TensorBoard when installed.
"""

from __future__ import annotations

import gc
import json
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import NearError
from ..utils.atomic import atomic_path, atomic_write_text
from .ema import EMA
from .schedule import make_scheduler

StepFn = Callable[[nn.Module, Any, "ItemRandom"], dict[str, torch.Tensor]]


class ItemRandom:
    """Per-sample random streams for one step: item ``i`` of the batch draws from a generator seeded
    by (run seed, step, the item's position in the *global* batch). The numbers an item gets are
    therefore the same whatever the number of processes, and after a resume."""

    def __init__(self, seeds: list[int]) -> None:
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]

    def __len__(self) -> int:
        return len(self.generators)

    def randn(self, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """[B, *shape] standard normal, row i from item i's stream."""
        return torch.stack([torch.randn(shape, generator=g, dtype=dtype) for g in self.generators])

    def rand(self, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """[B, *shape] uniform [0, 1), row i from item i's stream."""
        return torch.stack([torch.rand(shape, generator=g, dtype=dtype) for g in self.generators])


@dataclass
class TrainConfig:
    max_steps: int = 1000
    batch_size: int = 1  # per process
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    grad_clip: float | None = 1.0
    ema_decay: float | None = 0.999
    ema_warmup: bool = True  # ramp the EMA decay up from 0 (see near_blender.train.ema)
    ckpt_every: int = 500
    log_every: int = 10
    seed: int = 0
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU; or "fp32" / "bf16"
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise NearError(
                f"Unknown training option(s) {unknown}; known: {sorted(cls.__dataclass_fields__)}."
            )
        if "betas" in known:
            known["betas"] = tuple(known["betas"])
        return cls(**known)


def rng_state() -> dict[str, Any]:
    """Every random generator's state as tensors and plain values (what ``weights_only`` loads)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [
            kind,
            torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ],
        "python": [int(version), list(internal), gauss_next],
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"].cpu())
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def dist_info() -> tuple[int, int]:
    """(rank, world size) of this process (0, 1 without torch.distributed)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def init_distributed_from_env(backend: str | None = None) -> bool:
    """Join the process group that ``torchrun`` describes (RANK/WORLD_SIZE/MASTER_ADDR...).

    Returns True when running distributed. gloo on CPU, nccl on CUDA unless ``backend`` is given.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not torch.distributed.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        torch.distributed.init_process_group(backend=backend)
    return True


def shutdown_distributed(wait: bool = True) -> None:
    """Leave the process group cleanly (no-op when not distributed).

    Waits for every rank first (rank 0 may still be writing its last checkpoint), then destroys the
    group while the interpreter is fully alive: gloo worker threads still running at interpreter
    tear-down abort the process ("terminate called without an active exception", SIGABRT), which
    ``torchrun`` reports as a failed run although training finished. Call after the last use of a
    :class:`Trainer` (``Trainer.close()`` drops its DDP wrapper); ``wait=False`` after an error,
    when the other ranks may never reach the barrier.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        if wait:
            torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def item_seed(seed: int, step: int, position: int) -> int:
    return (seed * 1_000_003 + step * 91_763 + position * 7_919) % (2**63 - 1)


class Trainer:
    """Runs ``step_fn`` over a dataset with the guarantees in the module docstring.

    Args:
        model: the module to train (wrapped in DDP when distributed).
        dataset: a sequence; ``collate(list_of_items) -> batch`` builds what ``step_fn`` consumes.
        step_fn: ``(model, batch, item_random) -> dict`` with a scalar ``"total"`` (a mean over the
            batch) to minimize; other scalar entries are logged.
        out_dir: run folder (checkpoints, metrics.jsonl, exports).
        export_fn: ``(module, folder)`` writes a deployable model (EMA weights when enabled) into
            ``folder``; called at every checkpoint and at the end.
    """

    def __init__(
        self,
        model: nn.Module,
        dataset: Sequence[Any],
        step_fn: StepFn,
        config: TrainConfig,
        out_dir: str | os.PathLike[str],
        collate: Callable[[list[Any]], Any] = list,
        export_fn: Callable[[nn.Module, Path], None] | None = None,
        device: str | torch.device = "cpu",
        params: list[nn.Parameter] | None = None,
    ) -> None:
        if len(dataset) == 0:
            raise NearError("The training set is empty: generate data first (near datagen) or check --data.")
        self.cfg = config
        self.device = torch.device(device)
        self.rank, self.world = dist_info()
        self.model = model.to(self.device)
        self.dataset = dataset
        self.collate = collate
        self.step_fn = step_fn
        self.export_fn = export_fn
        self.out = Path(out_dir)
        trainable = params if params is not None else [p for p in model.parameters() if p.requires_grad]
        if not trainable:
            raise NearError("The model has no trainable parameters.")
        self.optimizer = torch.optim.AdamW(
            trainable, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
        )
        self.scheduler = make_scheduler(
            self.optimizer, config.warmup_steps, config.max_steps, config.min_lr_ratio
        )
        self.ema = EMA(model, config.ema_decay, config.ema_warmup) if config.ema_decay else None
        self.step = 0
        self.ddp_model: nn.Module = self.model
        self._wrap_ddp()
        self._tb = None

    def _wrap_ddp(self) -> None:
        if self.world > 1 and self.ddp_model is self.model:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )

    def close(self) -> None:
        """Drop the DDP wrapper (its reducer holds the process group); the trainer can still save
        and export, and ``fit`` wraps the model again if called later."""
        if self.ddp_model is not self.model:
            self.ddp_model = self.model
            gc.collect()  # DDP's hooks form reference cycles: free its reducer (and group handle) now

    # -- data order ---------------------------------------------------------------------------------
    def batch_indices(self, step: int) -> list[int]:
        """Dataset indices of this process's share of global batch ``step``."""
        n, G = len(self.dataset), self.cfg.batch_size * self.world
        out = []
        for j in range(
            step * G + self.rank * self.cfg.batch_size, step * G + (self.rank + 1) * self.cfg.batch_size
        ):
            epoch, pos = divmod(j, n)
            out.append(int(self._epoch_order(epoch)[pos]))
        return out

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        cache = getattr(self, "_order_cache", None)
        if cache is None or cache[0] != epoch:
            g = torch.Generator().manual_seed(self.cfg.seed * 7_368_787 + epoch)
            self._order_cache = (epoch, torch.randperm(len(self.dataset), generator=g))
        return self._order_cache[1]

    # -- checkpoints --------------------------------------------------------------------------------
    @property
    def ckpt_path(self) -> Path:
        return self.out / "checkpoints" / "last.pt"

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "rng": rng_state(),
            "config": json.loads(json.dumps(asdict(self.cfg), default=str)),
            "world_size": self.world,
        }

    def save_checkpoint(self) -> None:
        if self.rank != 0:
            return
        with atomic_path(self.ckpt_path) as tmp:
            torch.save(self.state_dict(), tmp)
        if self.export_fn is not None:
            self.export_fn(self.ema.model if self.ema else self.model, self.out / "model")

    def load_checkpoint(self, path: str | os.PathLike[str] | None = None) -> bool:
        """Restore everything from ``path`` (default: the run's last.pt). False if there is none."""
        p = Path(path) if path else self.ckpt_path
        if not p.is_file():
            return False
        try:
            # weights only: a checkpoint holds tensors and plain values, never code to run
            st = torch.load(p, map_location=self.device, weights_only=True)
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise NearError(
                f"Cannot read the training checkpoint {p} ({first}). It is damaged, or it holds more than "
                "tensors and plain values (nothing in it was run); delete it to start the run over."
            ) from None
        if st.get("world_size", 1) != self.world:
            raise NearError(
                f"Checkpoint {p} was written by {st.get('world_size')} process(es) and this run has "
                f"{self.world}; resume with the same number of processes (the data order depends on it)."
            )
        try:
            self.model.load_state_dict(st["model"])
        except RuntimeError as e:
            raise NearError(f"Checkpoint {p} does not match this model ({str(e).splitlines()[0]}).") from None
        self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        if self.ema and st.get("ema"):
            self.ema.load_state_dict(st["ema"])
        set_rng_state(st["rng"])
        self.step = int(st["step"])
        self._truncate_log(self.step)
        return True

    # -- logging --------------------------------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        return self.out / "metrics.jsonl"

    def _truncate_log(self, step: int) -> None:
        if self.rank != 0 or not self.log_path.is_file():
            return
        keep = [
            ln
            for ln in self.log_path.read_text().splitlines()
            if ln.strip() and json.loads(ln)["step"] <= step
        ]
        atomic_write_text(self.log_path, "".join(k + "\n" for k in keep))

    def _log(self, record: dict[str, Any]) -> None:
        if self.rank != 0:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.out / "tensorboard"))
            except Exception:  # tensorboard not installed: JSONL only
                self._tb = False
        if self._tb:
            for k, v in record.items():
                if k != "step" and isinstance(v, int | float):
                    self._tb.add_scalar(k, v, record["step"])

    # -- the loop -------------------------------------------------------------------------------------
    def _autocast(self):
        use_bf16 = self.cfg.precision == "bf16" or (
            self.cfg.precision == "auto" and self.device.type == "cuda"
        )
        if use_bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return torch.autocast(self.device.type, enabled=False)

    def train_step(self) -> dict[str, float]:
        idx = self.batch_indices(self.step)
        batch = self.collate([self.dataset[i] for i in idx])
        first = self.rank * self.cfg.batch_size
        rand = ItemRandom([item_seed(self.cfg.seed, self.step, first + i) for i in range(len(idx))])
        self.ddp_model.train()
        with self._autocast():
            losses = self.step_fn(self.ddp_model, batch, rand)
        total = losses["total"]
        if not torch.isfinite(total):
            raise NearError(
                f"The loss became {float(total)} at step {self.step}; lower the learning rate or check the "
                "data for NaN/Inf (the last good checkpoint is kept)."
            )
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        grad_norm = None
        if self.cfg.grad_clip:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip))
        self.optimizer.step()
        self.scheduler.step()
        if self.ema:
            self.ema.update(self.model)
        self.step += 1
        out = {k: float(v.detach()) for k, v in losses.items() if torch.is_tensor(v) and v.dim() == 0}
        out["lr"] = self.optimizer.param_groups[0]["lr"]
        if grad_norm is not None:
            out["grad_norm"] = grad_norm
        return out

    def fit(
        self,
        resume: bool = True,
        progress: bool = True,
        cancel: Callable[[], bool] | None = None,
        stop_at: int | None = None,
    ) -> dict[str, float]:
        """Train until ``cfg.max_steps`` (or ``stop_at``). Returns the last logged losses."""
        if resume:
            self.load_checkpoint()
        self._wrap_ddp()
        end = min(self.cfg.max_steps, stop_at) if stop_at is not None else self.cfg.max_steps
        bar = None
        if progress and self.rank == 0:
            from tqdm import tqdm

            bar = tqdm(
                total=end, initial=self.step, desc=f"train {self.out.name}", unit="step", dynamic_ncols=True
            )
        last: dict[str, float] = {}
        t0 = time.perf_counter()
        restore = _stop_on_sigterm()
        try:
            while self.step < end:
                if cancel is not None and cancel():
                    break
                last = self.train_step()
                if self.step % self.cfg.log_every == 0 or self.step == end:
                    self._log({"step": self.step, **last, "elapsed_s": round(time.perf_counter() - t0, 3)})
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{last['total']:.4g}")
                if self.step % self.cfg.ckpt_every == 0:
                    self.save_checkpoint()
        except KeyboardInterrupt:
            self.save_checkpoint()
            raise
        finally:
            restore()
            if bar is not None:
                bar.close()
        self.save_checkpoint()
        return last


def _stop_on_sigterm() -> Callable[[], None]:
    """Make SIGTERM (``kill``, a farm's pre-emption) behave like Ctrl-C during training, so the
    run checkpoints before it exits (background jobs often ignore SIGINT). Returns the undo."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def _raise(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, _raise)
    return lambda: signal.signal(signal.SIGTERM, old)
