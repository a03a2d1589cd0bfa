"""LPIPS v0.1 (Zhang et al. 2018) with the AlexNet backbone, written here (no torchvision).

The network needs two pretrained files that cannot be downloaded on every machine:

* the AlexNet ImageNet weights in torchvision's layout (``alexnet-owt-7be5be79.pth``), and
* LPIPS's linear calibration layers (``alex.pth`` from the ``lpips`` package, v0.1).

They are looked up in ``$NEAR_LPIPS_DIR``, then torch hub's checkpoint cache
(``$TORCH_HOME/hub/checkpoints``) and an installed ``lpips`` package. When either is missing,
:meth:`LPIPS.load_if_available` returns None, and the training loss and the evaluation report say
"n/a" instead of inventing a number.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

BACKBONE_FILE = "alexnet-owt-7be5be79.pth"
LINEAR_FILE = "alex.pth"
# (in, out, kernel, stride, padding) of AlexNet's five convolutions; torchvision indices 0,3,6,8,10.
_ALEX_CONVS = [
    (3, 64, 11, 4, 2),
    (64, 192, 5, 1, 2),
    (192, 384, 3, 1, 1),
    (384, 256, 3, 1, 1),
    (256, 256, 3, 1, 1),
]
_ALEX_INDEX = [0, 3, 6, 8, 10]


class LPIPS(nn.Module):
    """Perceptual distance between images in [0, 1], ``[B, H, W, 3]`` -> ``[B]``."""

    _cache: LPIPS | None = None

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.ModuleDict(
            {
                str(i): nn.Conv2d(cin, cout, k, s, p)
                for i, (cin, cout, k, s, p) in zip(_ALEX_INDEX, _ALEX_CONVS)
            }
        )
        self.lins = nn.ModuleList(nn.Conv2d(c[1], 1, 1, bias=False) for c in _ALEX_CONVS)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.requires_grad_(False)

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for n, i in enumerate(_ALEX_INDEX):
            if n in (1, 2):  # max-pool after the first two ReLUs (torchvision's AlexNet)
                x = F.max_pool2d(x, kernel_size=3, stride=2)
            x = F.relu(self.features[str(i)](x))
            taps.append(x)
        return taps

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        xa = ((a.permute(0, 3, 1, 2) * 2 - 1) - self.shift) / self.scale
        xb = ((b.permute(0, 3, 1, 2) * 2 - 1) - self.shift) / self.scale
        total = torch.zeros(a.shape[0], dtype=a.dtype, device=a.device)
        for lin, fa, fb in zip(self.lins, self._taps(xa), self._taps(xb)):
            na = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            nb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((na - nb) ** 2).mean(dim=(1, 2, 3))
        return total

    # -- weights -----------------------------------------------------------------------------------
    def load_weights(self, backbone: dict[str, torch.Tensor], linear: dict[str, torch.Tensor]) -> None:
        """Load torchvision AlexNet (``features.<i>.weight|bias``) and LPIPS (``lin<n>.model.1.weight``)
        state dicts; raises on missing or mis-shaped keys."""
        own = {}
        for i in _ALEX_INDEX:
            own[f"features.{i}.weight"] = backbone[f"features.{i}.weight"]
            own[f"features.{i}.bias"] = backbone[f"features.{i}.bias"]
        for n in range(5):
            own[f"lins.{n}.weight"] = linear[f"lin{n}.model.1.weight"]
        own["shift"], own["scale"] = self.shift, self.scale
        self.load_state_dict(own, strict=True)

    @staticmethod
    def weight_files() -> tuple[Path, Path] | None:
        dirs = []
        if os.environ.get("NEAR_LPIPS_DIR"):
            dirs.append(Path(os.environ["NEAR_LPIPS_DIR"]))
        torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
        dirs.append(torch_home / "hub" / "checkpoints")
        spec = importlib.util.find_spec("lpips")
        if spec is not None and spec.origin:
            dirs.append(Path(spec.origin).parent / "weights" / "v0.1")
        backbone = next((d / BACKBONE_FILE for d in dirs if (d / BACKBONE_FILE).is_file()), None)
        linear = next((d / LINEAR_FILE for d in dirs if (d / LINEAR_FILE).is_file()), None)
        return (backbone, linear) if backbone and linear else None

    @classmethod
    def weights_available(cls) -> bool:
        return cls.weight_files() is not None

    @classmethod
    def load_if_available(cls) -> LPIPS | None:
        if cls._cache is not None:
            return cls._cache
        files = cls.weight_files()
        if files is None:
            return None
        model = cls()
        model.load_weights(
            torch.load(files[0], map_location="cpu", weights_only=True),
            torch.load(files[1], map_location="cpu", weights_only=True),
        )
        cls._cache = model.eval()
        return cls._cache
