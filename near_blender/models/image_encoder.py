"""Image-condition encoders: images ``[B, 3, H, W]`` in [0, 1] -> tokens ``[B, T, C]``.

* :class:`DinoV2Encoder` — a ViT with register tokens written to DINOv2's state-dict names
  (``cls_token``, ``register_tokens``, ``pos_embed``, ``mask_token``, ``patch_embed.proj``,
  ``blocks.{i}.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma}``,
  ``norm``), so the public ``dinov2_vitl14_reg4_pretrain.pth`` loads strictly. As in TRELLIS the
  condition is the token sequence *before* the final norm, passed through a non-affine LayerNorm:
  at 518² that is 1 CLS + 4 registers + 37² patches = 1374 tokens of 1024 channels.
* :class:`PatchImageEncoder` — the same architecture in a few-MB trainable configuration for the
  CPU default model (128² input, 16² patches, 64 channels: 1 + 64 tokens).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import NearError
from ..render.tonemap import tonemap_numpy
from .param_count import build_on_meta
from .registry import register_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DINOV2_REG_FILE = "dinov2_vitl14_reg4_pretrain.pth"


class _Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(o.transpose(1, 2).reshape(B, N, C))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _LayerScale(nn.Module):
    def __init__(self, dim: int, init: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class _Block(nn.Module):
    """DINOv2 block: x += ls1(attn(norm1(x))); x += ls2(mlp(norm2(x)))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, init_values: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, num_heads)
        self.ls1 = _LayerScale(dim, init_values)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = _LayerScale(dim, init_values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class _PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, N, C]


@register_model("DinoV2Encoder", "DinoVisionTransformer")
class DinoV2Encoder(nn.Module):
    """ViT with registers (DINOv2 names); defaults are ViT-L/14 with 4 registers at 518².

    ``encode(images)`` resizes to ``img_size`` (bicubic, antialiased), normalises with ImageNet
    statistics and returns the pre-final-norm tokens through a non-affine LayerNorm
    ``[B, 1 + registers + (img_size / patch)², embed_dim]``.
    """

    def __init__(
        self,
        img_size: int = 518,
        patch_size: int = 14,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        num_register_tokens: int = 4,
        init_values: float = 1.0,
        interpolate_antialias: bool = True,
    ) -> None:
        super().__init__()
        if img_size % patch_size:
            raise NearError(f"img_size {img_size} must be a multiple of patch_size {patch_size}.")
        self.img_size = img_size
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.num_register_tokens = num_register_tokens
        self.interpolate_antialias = interpolate_antialias
        n = (img_size // patch_size) ** 2
        self.patch_embed = _PatchEmbed(patch_size, 3, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, embed_dim))
        self.register_tokens = (
            nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim)) if num_register_tokens else None
        )
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        self.blocks = nn.ModuleList(
            _Block(embed_dim, num_heads, mlp_ratio, init_values) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=1e-6)

    @property
    def out_channels(self) -> int:
        return self.embed_dim

    def num_tokens(self) -> int:
        """Tokens per image at ``img_size``: CLS + registers + patches."""
        return 1 + self.num_register_tokens + (self.img_size // self.patch_size) ** 2

    def interpolate_pos_encoding(self, npatch_h: int, npatch_w: int) -> torch.Tensor:
        """``pos_embed`` for an ``npatch_h x npatch_w`` patch grid (bicubic resize of the patch part)."""
        n = self.pos_embed.shape[1] - 1
        if npatch_h * npatch_w == n and npatch_h == npatch_w:
            return self.pos_embed
        m = int(math.sqrt(n))
        pe = self.pos_embed.float()
        patch = pe[:, 1:].reshape(1, m, m, -1).permute(0, 3, 1, 2)
        patch = F.interpolate(
            patch, size=(npatch_h, npatch_w), mode="bicubic", antialias=self.interpolate_antialias
        )
        patch = patch.permute(0, 2, 3, 1).reshape(1, npatch_h * npatch_w, -1)
        return torch.cat([pe[:, :1], patch], dim=1).to(self.pos_embed.dtype)

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Normalised image ``[B, 3, H, W]`` -> ``{"x_prenorm", "x_norm"}`` token tensors."""
        B, _, H, W = x.shape
        if H % self.patch_size or W % self.patch_size:
            raise NearError(f"Image size {H}x{W} must be a multiple of the patch size {self.patch_size}.")
        t = self.patch_embed(x)
        t = torch.cat([self.cls_token.expand(B, -1, -1), t], dim=1)
        t = t + self.interpolate_pos_encoding(H // self.patch_size, W // self.patch_size)
        if self.register_tokens is not None:
            t = torch.cat([t[:, :1], self.register_tokens.expand(B, -1, -1), t[:, 1:]], dim=1)
        for blk in self.blocks:
            t = blk(t)
        return {"x_prenorm": t, "x_norm": self.norm(t)}

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` in [0, 1] -> resized to ``img_size`` and ImageNet-normalised."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise NearError(f"Images must be [B, 3, H, W] RGB in [0, 1]; got {tuple(images.shape)}.")
        x = images.to(self.pos_embed.dtype)
        if x.shape[-2:] != (self.img_size, self.img_size):
            x = F.interpolate(x, size=(self.img_size, self.img_size), mode="bicubic", antialias=True).clamp(
                0, 1
            )
        mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype)[None, :, None, None]
        std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype)[None, :, None, None]
        return (x - mean) / std

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Condition tokens ``[B, T, C]``: pre-final-norm features, non-affine LayerNorm."""
        feats = self.forward_features(self.preprocess(images))["x_prenorm"]
        return F.layer_norm(feats, feats.shape[-1:])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode(images)


@register_model("PatchImageEncoder")
class PatchImageEncoder(DinoV2Encoder):
    """Small trainable image encoder for the CPU default model (same architecture as DINOv2)."""

    def __init__(
        self,
        img_size: int = 128,
        patch_size: int = 16,
        embed_dim: int = 64,
        depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        num_register_tokens: int = 0,
        init_values: float = 1.0,
        interpolate_antialias: bool = True,
    ) -> None:
        super().__init__(
            img_size=img_size, patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
            mlp_ratio=mlp_ratio, num_register_tokens=num_register_tokens, init_values=init_values,
            interpolate_antialias=interpolate_antialias,
        )  # fmt: skip


def dinov2_vitl14_reg_config(**overrides: Any) -> dict[str, Any]:
    """Constructor kwargs of DINOv2 ViT-L/14 with 4 registers (hub name ``dinov2_vitl14_reg``)."""
    cfg: dict[str, Any] = dict(
        img_size=518, patch_size=14, embed_dim=1024, depth=24, num_heads=16, mlp_ratio=4.0,
        num_register_tokens=4, init_values=1.0, interpolate_antialias=True,
    )  # fmt: skip
    cfg.update(overrides)
    return cfg


def find_dinov2_weights(filename: str = DINOV2_REG_FILE) -> Path | None:
    """A local copy of the public DINOv2 checkpoint: ``$NEAR_DINOV2_WEIGHTS`` or torch hub's cache."""
    env = os.environ.get("NEAR_DINOV2_WEIGHTS")
    if env:
        return Path(env) if Path(env).is_file() else None
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch"
    )
    p = Path(torch_home) / "hub" / "checkpoints" / filename
    return p if p.is_file() else None


def load_dinov2(
    path: str | os.PathLike[str] | None = None, device: torch.device | str | None = None
) -> DinoV2Encoder:
    """DINOv2 ViT-L/14-reg from its public ``.pth`` (strict); NearError naming where to put it if absent."""
    from .checkpoint import load_state_dict_file, load_weights

    p = Path(path) if path is not None else find_dinov2_weights()
    if p is None or not p.is_file():
        raise NearError(
            f"DINOv2 weights not found ({DINOV2_REG_FILE}). Download them once from "
            "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_reg4_pretrain.pth and set "
            "NEAR_DINOV2_WEIGHTS to the file (or put it in torch hub's checkpoints folder), or use the "
            "trainable PatchImageEncoder."
        )
    model = build_on_meta(DinoV2Encoder, dinov2_vitl14_reg_config())
    model = model.to_empty(device=torch.device(device or "cpu"))
    load_weights(model, load_state_dict_file(p), strict=True, source=str(p))
    return model.eval()


def image_cond_model(name: str, device: torch.device | str | None = None) -> DinoV2Encoder:
    """Resolve a pipeline's ``image_cond_model`` string (TRELLIS: ``"dinov2_vitl14_reg"``)."""
    if name in ("dinov2_vitl14_reg", "dinov2_vitl14_reg4"):
        return load_dinov2(device=device)
    raise NearError(f"Unknown image_cond_model {name!r}; supported: 'dinov2_vitl14_reg' (or a model stem).")


def prepare_image(rgba: np.ndarray, size: int, margin: float = 0.1) -> torch.Tensor:
    """Premultiplied scene-linear RGBA ``[H, W, 4]`` -> encoder input ``[3, size, size]`` in [0, 1].

    AgX tone mapping (display-referred, as the artist sees the image), then a square crop around the
    alpha > 0.5 bounding box (``margin`` of its size on each side) resized with antialiasing.
    """
    rgba = np.asarray(rgba, dtype=np.float32)
    if rgba.ndim != 3 or rgba.shape[2] != 4:
        raise NearError(f"The input image must be RGBA [H, W, 4]; got {rgba.shape}.")
    alpha = rgba[..., 3]
    ys, xs = np.nonzero(alpha > 0.5)
    if len(ys) == 0:
        raise NearError("The input image has no opaque pixels (alpha > 0.5): remove the background first.")
    ldr = tonemap_numpy(np.maximum(rgba[..., :3], 0.0)) * alpha[..., None]  # black background
    cy, cx = (ys.min() + ys.max() + 1) / 2, (xs.min() + xs.max() + 1) / 2
    half = max(ys.max() + 1 - ys.min(), xs.max() + 1 - xs.min()) * (0.5 + margin)
    H, W = alpha.shape
    img = torch.from_numpy(np.ascontiguousarray(ldr)).permute(2, 0, 1)[None]
    # crop with zero padding via an affine grid (exact square around the object)
    theta = torch.tensor(
        [[[half / (W / 2), 0.0, (cx - W / 2) / (W / 2)], [0.0, half / (H / 2), (cy - H / 2) / (H / 2)]]],
        dtype=torch.float32,
    )
    big = max(size * 2, 2)
    grid = F.affine_grid(theta, [1, 3, big, big], align_corners=False)
    crop = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = F.interpolate(crop, size=(size, size), mode="area")
    return out[0].clamp(0.0, 1.0)
