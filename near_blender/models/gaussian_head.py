"""Gaussian heads and decoding of the lighting-aware decoder (paper eq. 5; TRELLIS/NeAR conventions).

Heads per voxel (K Gaussians each), in the published layout and order:

* ``gs_out_layer``  (MLP C-C-GELU-out, reads the intrinsic feature): offset 3K, base colour 3K,
  scale 3K, rotation 4K, opacity K;
* ``pbr_out_layer`` (MLP, intrinsic): roughness K, metallic K, then ``n_extra_pbr`` auxiliary
  K-blocks (published: 1, ``_pbr1``);
* ``scale_out_layer`` (Linear, lighting-aware feature): light-specific scale 3K;
* ``rgb_out_layer``  (Linear, lighting-aware): colour feature F K (F = 32 published, 48 in the
  paper), shadow K, then ``n_extra_light`` auxiliary K-blocks (published: 2, ``_hdri1/_hdri2``).

Every attribute block is ``[K, d]`` Gaussian-major inside its channel range, and is multiplied by
its ``representation_config["lr"][name]`` factor (default 1) before activation.

Decoding (``RepresentationConfig``; published values in brackets):

* centre: ``o' = o + offset_perturbation`` (if ``perturb_offset``; Hammersley buffer ``[K, 3]`` =
  ``atanh((2 h - 1) / voxel_size)``), ``x = (coord + 0.5) / res + tanh(o') / res * 0.5 * voxel_size``,
  then ``- 0.5`` -> object space [-0.5, 0.5]^3, Z up [voxel_size 1.5, res 64];
* scale: ``sqrt(act(s + act^-1(scaling_bias))^2 + k^2)``, act = softplus [bias 0.004, k = 9e-4];
  the light-specific scale uses the same formula;
* scale floor (this project's option, not published; ``min_scale`` m = 0: off): a model whose
  scales all sit at the ``k`` floor (sub-pixel splats, widened by the rasterizer's 2D filter at
  its training size) draws a see-through lattice of dots at larger output sizes. With m > 0 the
  ``min_scale_axes`` largest axes of every Gaussian (2: a flat disc keeps its shortest axis, hence
  its normal; 3: all three) are floored at ``F = m / res`` (m in voxel edges), by
  ``min_scale_mode``: ``"scale"`` floors the decoded scales, ``max(s, F)``; ``"footprint"`` floors
  what is drawn, the rasterizer's pixel filter included: at render time the axis scale becomes
  ``max(s, sqrt(max(F^2 - eps2d p^2, 0)))``, ``p`` the size of a pixel at the Gaussian's depth
  (``depth / focal`` in world units, ``eps2d`` px^2 the filter), so an image the size the model
  was trained at changes little and larger ones stay covered (the decoded Gaussians carry ``F``
  as ``min_footprint``; their scales, hence shortest-axis normals, are left as decoded; with
  ``"scale"`` and 3 axes the shortest axis of a fully floored Gaussian is arbitrary).
  :mod:`near_blender.eval.coverage` measures the effect (issue 16);
* pixel filter (``pixel_filter``, px^2; not published): the ``eps2d`` low-pass that the renderer
  adds to every drawn 2D covariance [0.3, gsplat's and the published renderers' value]. The
  bundled model is fine-tuned at 0.1: at 0.3 its silhouettes spill about a pixel past the object at
  its 64² training size (a Cycles render's 1-px box filter is sharper), issue 16;
* rotation: ``normalize(q + (1, 0, 0, 0))``, quaternions (w, x, y, z);
* opacity: ``tanh(raw + ln((1 + b) / (1 - b)))`` with b = ``opacity_bias`` [0.1]; this is the
  published ``inverse_tanh`` (twice ``atanh(b)``), so zero logits give tanh(0.2007) = 0.198, and
  negative opacities are allowed (the rasterizer skips them);
* base colour: ``"sh_dc"`` (published: degree-0 SH, ``max(C0 raw + 0.5, 0)``, C0 = 0.2820948) or
  ``"sigmoid"``; roughness, metallic, shadow and the auxiliary channels: sigmoid; colour feature:
  identity (the radiance MLP reads it);
* normals: the rotation-matrix column of the smallest **light-specific** scale, flipped to face
  the camera (``n . (c - p) >= 0``); ``p`` and ``c`` are compared in the view-embedding frame, as
  the published renderer does (see :mod:`.view_embedding`). With ``normal_source: "voxels"`` (this
  project's option for small models, not published) every Gaussian takes its voxel's surface normal
  estimated from the voxel shell (:mod:`near_blender.sparse.surface_normals`, ``normal_radius``
  voxels), flipped the same way. With ``normal_source: "features"`` it takes its voxel's mean
  surface normal read from the input SLAT (renderer option ``feature_normals``; outward, not
  flipped) where that is at least ``FEATURE_NORMAL_MIN_LENGTH`` long, the voxel-shell normal elsewhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import NearError
from ..render.quaternion import quat_multiply, quat_to_rotmat, rotation_matrix_to_quat
from ..render.rasterize import DEFAULT_EPS2D

SH_C0 = 0.28209479177387814
# where the Gaussians' normals come from: the published shortest axis of the light-specific scale,
# or the geometry of the voxel shell (``near_blender.sparse.surface_normals``; every Gaussian of a
# voxel shares its voxel's normal; not a published option)
NORMAL_SOURCES = ("shortest_axis", "voxels", "features")
# normal_source "features": a voxel's mean surface normal (input SLAT) shorter than this (its
# surfaces face different ways: edges, thin parts) is replaced by the voxel shell's PCA normal
FEATURE_NORMAL_MIN_LENGTH = 0.5
# how min_scale floors a Gaussian: its drawn footprint (pixel filter included) or its decoded scales
MIN_SCALE_MODES = ("footprint", "scale")
BaseColorActivation = Literal["sh_dc", "sigmoid"]


# ---------------------------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GaussianLayout:
    """Channel layout of the four heads for ``num_gaussians`` (K) Gaussians per voxel."""

    num_gaussians: int = 32
    color_feature_dim: int = 32
    n_extra_pbr: int = 1
    n_extra_light: int = 2

    def __post_init__(self) -> None:
        if self.num_gaussians < 1 or self.color_feature_dim < 1:
            raise NearError("A Gaussian layout needs at least one Gaussian and one colour-feature channel.")
        if self.n_extra_pbr < 0 or self.n_extra_light < 0:
            raise NearError("The numbers of auxiliary head channels must be >= 0.")

    def heads(self) -> dict[str, list[tuple[str, int]]]:
        """Head name -> ordered ``(attribute, per-Gaussian width)``."""
        return {
            "gs_out_layer": [
                ("_xyz", 3),
                ("_base_color", 3),
                ("_scaling", 3),
                ("_rotation", 4),
                ("_opacity", 1),
            ],
            "pbr_out_layer": [("_roughness", 1), ("_metallic", 1)]
            + [(f"_pbr{i + 1}", 1) for i in range(self.n_extra_pbr)],
            "scale_out_layer": [("_scaling_view", 3)],
            "rgb_out_layer": [("_rgb", self.color_feature_dim), ("_shadow", 1)]
            + [(f"_hdri{i + 1}", 1) for i in range(self.n_extra_light)],
        }

    def out_channels(self, head: str) -> int:
        return self.num_gaussians * sum(d for _, d in self.heads()[head])

    def split(self, head: str, out: Tensor) -> dict[str, Tensor]:
        """The attributes of ``head`` read from channel 0 of ``out`` ``[N, >= out_channels(head)]``
        -> attribute -> ``[N, K, d]``."""
        res, start, K = {}, 0, self.num_gaussians
        for name, d in self.heads()[head]:
            res[name] = out[:, start : start + K * d].reshape(out.shape[0], K, d)
            start += K * d
        return res

    def read_out(self, outputs: dict[str, Tensor], shared: bool = False) -> dict[str, Tensor]:
        """Attributes ``[N, K, d]`` from the raw head outputs ``{head: [N, out_channels(head)]}``.

        ``shared=False`` (the paper): each head's attributes come from its own output.
        ``shared=True`` (the published NeAR renderer, ``compat="published"``): the four outputs
        are concatenated in head order and every head's attribute group is read from channel 0 of
        that concatenation, so the PBR and view-scale groups read the Gaussian head's first
        channels (its offsets), the lighting group reads the Gaussian, PBR, view-scale and the
        first channels of the lighting head, and the PBR and view-scale heads go unread.
        """
        order = list(self.heads())
        if shared:
            joined = torch.cat([outputs[h] for h in order], dim=-1)
        res: dict[str, Tensor] = {}
        for h in order:
            res.update(self.split(h, joined if shared else outputs[h]))
        return res


class GaussianHeads(nn.Module):
    """The four heads; ``forward(h_intrinsic [N, C], h_lighting [N, C]) -> {attribute: [N, K, d]}``.

    ``shared_read_out``: read the attributes as the published renderer does
    (:meth:`GaussianLayout.read_out`); the heads' parameters are the same either way.
    """

    def __init__(self, channels: int, layout: GaussianLayout, shared_read_out: bool = False) -> None:
        super().__init__()
        self.layout = layout
        self.shared_read_out = shared_read_out

        def mlp(out: int) -> nn.Sequential:
            return nn.Sequential(nn.Linear(channels, channels), nn.GELU(), nn.Linear(channels, out))

        self.gs_out_layer = mlp(layout.out_channels("gs_out_layer"))
        self.pbr_out_layer = mlp(layout.out_channels("pbr_out_layer"))
        self.scale_out_layer = nn.Linear(channels, layout.out_channels("scale_out_layer"))
        self.rgb_out_layer = nn.Linear(channels, layout.out_channels("rgb_out_layer"))

    def forward(self, h_intrinsic: Tensor, h_lighting: Tensor) -> dict[str, Tensor]:
        reads = {"gs_out_layer": h_intrinsic, "pbr_out_layer": h_intrinsic}
        reads.update(scale_out_layer=h_lighting, rgb_out_layer=h_lighting)
        outputs = {name: getattr(self, name)(x) for name, x in reads.items()}
        return self.layout.read_out(outputs, shared=self.shared_read_out)


# ---------------------------------------------------------------------------------------------
# Representation config and activations
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RepresentationConfig:
    """Decoding constants; ``from_dict`` reads the published ``representation_config`` names."""

    num_gaussians: int = 32
    voxel_size: float = 1.5
    filter_3d: float = 9e-4
    scaling_bias: float = 4e-3
    opacity_bias: float = 0.1
    scaling_activation: str = "softplus"
    perturb_offset: bool = True
    lr: dict[str, float] = field(default_factory=dict)
    normal_source: str = "shortest_axis"
    normal_radius: float = 2.5
    min_scale: float = 0.0  # scale floor in voxel edges (1 / res); 0 = off (module docstring)
    min_scale_axes: int = 2  # how many of each Gaussian's largest axes are floored (2 or 3)
    min_scale_mode: str = "footprint"  # "footprint" (drawn size, pixel filter included) | "scale"
    pixel_filter: float = DEFAULT_EPS2D  # eps2d, px^2: the rasterizer's low-pass (module docstring)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> RepresentationConfig:
        d = dict(d or {})
        cfg = cls(
            num_gaussians=int(d.get("num_gaussians", 32)),
            voxel_size=float(d.get("voxel_size", 1.5)),
            filter_3d=float(d.get("3d_filter_kernel_size", 9e-4)),
            scaling_bias=float(d.get("scaling_bias", 4e-3)),
            opacity_bias=float(d.get("opacity_bias", 0.1)),
            scaling_activation=str(d.get("scaling_activation", "softplus")),
            perturb_offset=bool(d.get("perturb_offset", True)),
            lr={str(k): float(v) for k, v in dict(d.get("lr", {})).items()},
            normal_source=str(d.get("normal_source", "shortest_axis")),
            normal_radius=float(d.get("normal_radius", 2.5)),
            min_scale=float(d.get("min_scale", 0.0)),
            min_scale_axes=int(d.get("min_scale_axes", 2)),
            min_scale_mode=str(d.get("min_scale_mode", "footprint")),
            pixel_filter=float(d.get("pixel_filter", DEFAULT_EPS2D)),
        )
        if not (math.isfinite(cfg.pixel_filter) and cfg.pixel_filter >= 0.0):
            raise NearError(
                f"representation_config needs pixel_filter >= 0 (px^2, the rasterizer's eps2d), "
                f"got {cfg.pixel_filter}."
            )
        if not cfg.min_scale >= 0.0 or cfg.min_scale_axes not in (2, 3):
            raise NearError(
                f"representation_config needs min_scale >= 0 (voxel edges) and min_scale_axes 2 or 3, "
                f"got {cfg.min_scale} and {cfg.min_scale_axes}."
            )
        if cfg.min_scale_mode not in MIN_SCALE_MODES:
            raise NearError(
                f"Unknown min_scale_mode {cfg.min_scale_mode!r}; use one of {list(MIN_SCALE_MODES)}."
            )
        if cfg.normal_source not in NORMAL_SOURCES:
            raise NearError(
                f"Unknown normal_source {cfg.normal_source!r}; use one of {list(NORMAL_SOURCES)}."
            )
        if cfg.normal_radius < 1:
            raise NearError(f"normal_radius must be at least 1 voxel, got {cfg.normal_radius}.")
        if cfg.scaling_activation not in ("softplus", "exp"):
            raise NearError(
                f"Unknown scaling activation {cfg.scaling_activation!r}; use 'softplus' or 'exp'."
            )
        if not (0.0 < cfg.opacity_bias < 1.0) or cfg.scaling_bias <= 0 or cfg.voxel_size <= 0:
            raise NearError(
                "representation_config needs 0 < opacity_bias < 1, scaling_bias > 0, voxel_size > 0."
            )
        if cfg.voxel_size <= 1.0 and cfg.perturb_offset:
            raise NearError(
                "perturb_offset needs voxel_size > 1 (the perturbation is atanh(h / voxel_size))."
            )
        return cfg

    def lr_of(self, name: str) -> float:
        return self.lr.get(name, 1.0)


def hammersley_offsets(num_gaussians: int, voxel_size: float) -> Tensor:
    """``offset_perturbation`` ``[K, 3]``: ``atanh((2 h_i - 1) / voxel_size)``.

    ``h_i = (i / K, radical_inverse_2(i), radical_inverse_3(i))`` (3D Hammersley points).
    """
    from ..data.sampling import radical_inverse

    pts = [[i / num_gaussians, radical_inverse(2, i), radical_inverse(3, i)] for i in range(num_gaussians)]
    h = torch.tensor(pts, dtype=torch.float64) * 2.0 - 1.0
    return torch.atanh(h / voxel_size).to(torch.get_default_dtype())


def inverse_softplus(y: float) -> float:
    """``x`` with ``softplus(x) = y`` (y > 0)."""
    return y + math.log(-math.expm1(-y))


def decode_scale(raw: Tensor, cfg: RepresentationConfig) -> Tensor:
    """``sqrt(act(raw + act^-1(bias))^2 + filter_3d^2)``."""
    if cfg.scaling_activation == "softplus":
        s = F.softplus(raw + inverse_softplus(cfg.scaling_bias))
    else:
        s = torch.exp(raw + math.log(cfg.scaling_bias))
    return torch.sqrt(s.square() + cfg.filter_3d**2)


def floor_scales(scales: Tensor, floor: float | Tensor, axes: int = 2) -> Tensor:
    """Per-axis scales ``[..., 3]`` with the ``axes`` largest raised to at least ``floor`` (same
    units; a number or a tensor broadcastable to ``[..., 1]``): ``axes = 2`` keeps each Gaussian's
    smallest scale (its disc's thickness and normal axis), ``axes = 3`` floors all three."""
    floored = scales.clamp_min(floor) if isinstance(floor, float) else torch.maximum(scales, floor)
    if axes == 3:
        return floored
    smallest = scales.argmin(dim=-1, keepdim=True)
    return floored.scatter(-1, smallest, scales.gather(-1, smallest))


def footprint_floor(
    min_footprint: Tensor, depth: Tensor, focal: float | Tensor, eps2d: float, ortho: bool
) -> Tensor:
    """The scale floor ``[M]`` (world units) that makes a Gaussian's drawn footprint at least
    ``min_footprint [M]`` (world units, standard deviation) per axis, the rasterizer's pixel filter
    (``eps2d`` px^2) counted: ``sqrt(max(F^2 - eps2d p^2, 0))`` with ``p`` the world size of a pixel
    at camera depth ``depth [M]`` (``depth / focal``; ``1 / focal`` for an orthographic camera,
    ``focal`` in pixels, or pixels per world unit)."""
    p = (torch.ones_like(depth) if ortho else depth.clamp_min(0.0)) / focal
    return torch.sqrt((min_footprint.square() - eps2d * p.square()).clamp_min(0.0))


def decode_rotation(raw: Tensor) -> Tensor:
    """Unit quaternions (w, x, y, z): ``normalize(raw + (1, 0, 0, 0))``."""
    bias = torch.zeros(4, dtype=raw.dtype, device=raw.device)
    bias[0] = 1.0
    return F.normalize(raw + bias, dim=-1)


def decode_opacity(raw: Tensor, opacity_bias: float) -> Tensor:
    """``tanh(raw + ln((1 + b) / (1 - b)))`` (published ``inverse_tanh``), in (-1, 1)."""
    return torch.tanh(raw + math.log((1.0 + opacity_bias) / (1.0 - opacity_bias)))


def decode_base_color(raw: Tensor, mode: BaseColorActivation, centre: Tensor | None = None) -> Tensor:
    """Base colour from logits ``[..., 3]``. ``centre`` (broadcastable, in [0, 1]): the colour that
    zero logits give (default: 0.5 for ``sh_dc``, 0.5 for ``sigmoid``), e.g. the voxel's base
    colour with ``base_color_skip``, so that the head predicts a residual."""
    if mode == "sh_dc":
        return torch.clamp_min(SH_C0 * raw + (0.5 if centre is None else centre), 0.0)
    if mode == "sigmoid":
        if centre is None:
            return torch.sigmoid(raw)
        return torch.sigmoid(raw + torch.logit(centre, eps=1e-3))
    raise NearError(f"Unknown base colour activation {mode!r}; use 'sh_dc' or 'sigmoid'.")


def decode_centres(
    raw_offset: Tensor,
    coords_xyz: Tensor,
    resolution: int,
    cfg: RepresentationConfig,
    perturbation: Tensor | None,
) -> Tensor:
    """Object-space centres ``[N, K, 3]`` from offset logits ``[N, K, 3]`` and voxel coords ``[N, 3]``."""
    o = raw_offset
    if cfg.perturb_offset:
        if perturbation is None:
            raise NearError("perturb_offset is on but no offset_perturbation was given.")
        o = o + perturbation.to(o.dtype)
    offset = torch.tanh(o) / resolution * 0.5 * cfg.voxel_size
    base = (coords_xyz.to(o.dtype) + 0.5) / resolution
    return base[:, None, :] + offset - 0.5


def shortest_axis_normals(quats: Tensor, scales: Tensor, positions: Tensor, cam_centres: Tensor) -> Tensor:
    """Unit normals ``[M, 3]``: axis of the smallest scale, flipped so that ``n . (c - p) >= 0``.

    ``positions`` ``[M, 3]`` and ``cam_centres`` ``[M, 3]`` must be in the same frame.
    """
    R = quat_to_rotmat(quats)
    idx = scales.argmin(dim=-1)
    n = torch.gather(R, 2, idx[:, None, None].expand(-1, 3, 1))[..., 0]
    return face_camera(n, positions, cam_centres)


def face_camera(normals: Tensor, positions: Tensor, cam_centres: Tensor) -> Tensor:
    """``normals [M, 3]`` flipped where needed so that ``n . (c - p) >= 0`` (same frame for all)."""
    flip = ((cam_centres - positions) * normals).sum(-1) < 0
    return torch.where(flip[:, None], -normals, normals)


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


@dataclass
class RelightableGaussians:
    """M = N_voxels x K Gaussians (voxel-major, then Gaussian index), object space, Z up.

    means [M, 3]; quats [M, 4] (w, x, y, z, unit); scales [M, 3] (base, for the base colour /
    roughness / metallic pass); light_scales [M, 3] (for the radiance / shadow pass); opacities
    [M] in (-1, 1); base_color [M, 3] >= 0; roughness, metallic, shadow [M] in (0, 1);
    color_feature [M, F]; normals [M, 3] (unit, from light_scales, facing the camera);
    batch [M] long; pbr_extra [M, n_extra_pbr] and light_extra [M, n_extra_light] in (0, 1)
    (the published auxiliary channels ``_pbr1``, ``_hdri1``, ``_hdri2``); min_footprint [M] or
    None (world units, the floor of the drawn per-axis scale that the renderer applies, see
    ``min_scale_mode``).
    """

    means: Tensor
    quats: Tensor
    scales: Tensor
    light_scales: Tensor
    opacities: Tensor
    base_color: Tensor
    roughness: Tensor
    metallic: Tensor
    shadow: Tensor
    color_feature: Tensor
    normals: Tensor
    batch: Tensor
    pbr_extra: Tensor
    light_extra: Tensor
    radiance: Tensor | None = None  # [M, 3] HDR radiance, when already evaluated (see ``transformed``)
    min_footprint: Tensor | None = None  # [M] smallest drawn per-axis scale (``min_scale_mode`` footprint)

    def __len__(self) -> int:
        return int(self.means.shape[0])

    def select(self, mask_or_index: Tensor) -> RelightableGaussians:
        """The Gaussians picked by a boolean mask or an index tensor over M."""
        picked = {}
        for f in fields(self):
            v = getattr(self, f.name)
            picked[f.name] = None if v is None else v[mask_or_index]
        return RelightableGaussians(**picked)

    def item(self, b: int) -> RelightableGaussians:
        """The Gaussians of batch item ``b``."""
        return self.select(self.batch == b)

    def tensor_fields(self) -> list[str]:
        """Names of the fields that hold a tensor (``radiance`` is ``None`` until evaluated)."""
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def transformed(self, rotation: Tensor, scale: float, offset: Tensor) -> RelightableGaussians:
        """The Gaussians moved by the similarity ``x -> scale * rotation @ x + offset`` (an object's
        placement in the world): means, orientations, both scale sets and normals. Appearance
        (colours, radiance, materials) is unchanged, so evaluate view- or normal-dependent radiance
        in object space first and store it in ``radiance``."""
        R = rotation.to(self.means.dtype)
        q_r = rotation_matrix_to_quat(R)
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["means"] = self.means @ R.T * scale + offset.to(self.means.dtype)
        out["quats"] = quat_multiply(q_r.expand_as(self.quats), self.quats)
        out["scales"] = self.scales * scale
        out["light_scales"] = self.light_scales * scale
        if self.min_footprint is not None:
            out["min_footprint"] = self.min_footprint * scale
        out["normals"] = self.normals @ R.T
        return RelightableGaussians(**out)


def decode_gaussians(
    raw: dict[str, Tensor],
    coords: Tensor,
    cfg: RepresentationConfig,
    layout: GaussianLayout,
    perturbation: Tensor | None,
    cam_centres: Tensor,
    orient_offset: float = 0.5,
    resolution: int = 64,
    base_color_activation: BaseColorActivation = "sh_dc",
    voxel_normals: Tensor | None = None,
    voxel_base_color: Tensor | None = None,
    normals_oriented: Tensor | None = None,
) -> RelightableGaussians:
    """Activate raw head outputs (``{attribute: [N, K, d]}``) into :class:`RelightableGaussians`.

    ``coords`` ``[N, 4]`` (batch, x, y, z); ``cam_centres`` ``[B, 3]`` world-space camera centres;
    normals are oriented with positions shifted by ``orient_offset`` (0.5 = the published [0, 1]^3
    grid frame, 0 = object space). ``voxel_normals`` ``[N, 3]`` (unit, unoriented): when given, each
    Gaussian's normal is its voxel's (oriented to the camera) instead of its shortest axis;
    ``normals_oriented`` ``[N]`` bool marks voxel normals that are already outward (never flipped).
    ``voxel_base_color`` ``[N, 3]`` in [0, 1]: when given, the base-colour logits are a residual
    around each voxel's colour.
    """
    r = {k: v * cfg.lr_of(k) for k, v in raw.items()}
    K = layout.num_gaussians
    N = coords.shape[0]
    batch = coords[:, 0].long().repeat_interleave(K)

    def flat(t: Tensor) -> Tensor:
        return t.reshape(N * K, t.shape[-1])

    means = flat(decode_centres(r["_xyz"], coords[:, 1:], resolution, cfg, perturbation))
    quats = flat(decode_rotation(r["_rotation"]))
    light_scales = flat(decode_scale(r["_scaling_view"], cfg))
    scales = flat(decode_scale(r["_scaling"], cfg))
    min_footprint = None
    if cfg.min_scale > 0 and cfg.min_scale_mode == "scale":  # not published (module docstring)
        light_scales = floor_scales(light_scales, cfg.min_scale / resolution, cfg.min_scale_axes)
        scales = floor_scales(scales, cfg.min_scale / resolution, cfg.min_scale_axes)
    elif cfg.min_scale > 0:  # "footprint": applied by the renderer, which knows the pixel size
        min_footprint = means.new_full((N * K,), cfg.min_scale / resolution)
    centres_b = cam_centres.to(means.dtype)[batch]
    if voxel_normals is None:
        normals = shortest_axis_normals(quats, light_scales, means + orient_offset, centres_b)
    else:
        n = voxel_normals.to(means.dtype).repeat_interleave(K, dim=0)
        normals = face_camera(n, means + orient_offset, centres_b)
        if normals_oriented is not None:
            normals = torch.where(normals_oriented.repeat_interleave(K, dim=0)[:, None], n, normals)

    def extras(prefix: str, n: int) -> Tensor:
        if n == 0:
            return means.new_zeros(N * K, 0)
        return torch.cat([torch.sigmoid(flat(r[f"{prefix}{i + 1}"])) for i in range(n)], dim=-1)

    return RelightableGaussians(
        means=means,
        quats=quats,
        scales=scales,
        light_scales=light_scales,
        opacities=flat(decode_opacity(r["_opacity"], cfg.opacity_bias))[:, 0],
        base_color=flat(
            decode_base_color(
                r["_base_color"],
                base_color_activation,
                None if voxel_base_color is None else voxel_base_color.to(means.dtype)[:, None, :],
            )
        ),
        roughness=torch.sigmoid(flat(r["_roughness"]))[:, 0],
        metallic=torch.sigmoid(flat(r["_metallic"]))[:, 0],
        shadow=torch.sigmoid(flat(r["_shadow"]))[:, 0],
        color_feature=flat(r["_rgb"]),
        normals=normals,
        batch=batch,
        pbr_extra=extras("_pbr", layout.n_extra_pbr),
        light_extra=extras("_hdri", layout.n_extra_light),
        min_footprint=min_footprint,
    )
