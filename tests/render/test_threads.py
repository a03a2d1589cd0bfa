"""Thread handling: the user's torch thread setting survives concurrent renders (viewport + F12)."""

from __future__ import annotations

import threading

import numpy as np
import torch

from near_blender.render import CompositeConfig, rasterize
from near_blender.render.tonemap import tonemap_torch

from .scenes import pinhole_K, random_scene


def test_thread_setting_is_restored_after_concurrent_calls() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        scene = random_scene(np.random.default_rng(0), 400, 3)
        args = [torch.as_tensor(scene[k], dtype=torch.float32)
                for k in ("means", "quats", "scales", "opacities", "features")]  # fmt: skip
        vm, K = torch.eye(4)[None], torch.as_tensor(pinhole_K(64, 48, 50.0), dtype=torch.float32)[None]
        cfg = CompositeConfig(serial_below=0)  # use the worker threads even on this small scene
        results: list = []

        def job() -> None:
            for _ in range(3):
                results.append(rasterize(*args, vm, K, 64, 48, backend="torch", config=cfg)[1])
                tonemap_torch(torch.rand(32, 32, 3, requires_grad=True)).sum().backward()

        threads = [threading.Thread(target=job) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert torch.get_num_threads() == 3
        assert len(results) == 9 and all(torch.equal(r, results[0]) for r in results)
    finally:
        torch.set_num_threads(before)
