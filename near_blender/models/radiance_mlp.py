"""Radiance MLP ("neural basis", paper 3.5.3; published class ``NeuralBasis``).

Per Gaussian: ``[colour feature (F), NeRF6(normalize(normal))] -> Linear -> act -> ... -> Linear``
with ``num_layers`` Linear layers (published: 3, hidden 64, i.e. in-64-64-out). Outputs:

* channels 0-2: HDR radiance through ``ELU(alpha = 1e-3)``. The ELU output is used **as is**
  (like the published renderer): radiance is linear and unbounded above, and may dip to
  ``-1e-3`` (never lower), a negligible undershoot that keeps a non-zero gradient for dark
  Gaussians; nothing is shifted or clamped here (a display path may clamp after compositing);
* channels 3..: ``n_extra = output_dim - 3`` auxiliary outputs through a sigmoid (published: 2).

``activation``: ``"sine"`` (published default, ``sin(w0 x)`` with w0 = 30 after every hidden layer,
SIREN initialisation: first layer ``U(-1/n, 1/n)``, later layers ``U(-sqrt(6/n)/w0, sqrt(6/n)/w0)``,
biases ``U(-1/n, 1/n)``), ``"relu"`` (the paper), ``"silu"`` or ``"gelu"`` (Xavier init, zero bias).
The normal encoding is :func:`~.encodings.nerf_encoding` (no pi, ``sin(x + pi/2)`` for cos) of the
unit normal, 6 frequencies plus the input (39 channels). Keys: ``mlp.0``, ``mlp.2``, ``mlp.4``.

``shading_prior`` (our option, not in the published models, which use ``"none"``): with
``"diffuse"`` the stage-2 assembly adds the network's radiance to an analytic diffuse term,
``base_colour * (1 - metallic) * shadow * E(n) / pi`` with the irradiance ``E`` integrated from
the conditioning map (:meth:`~near_blender.models.relightable.RelightableDecoder.radiance`), so
the network only learns what a Lambertian surface does not explain (specular, interreflection).
``"pbr"`` adds a split-sum glossy term (GGX-like lobe over the same map, Fresnel from roughness,
metallic and base colour) to the diffuse one, so that metals and highlights need not be learned
either; the network then learns what is left (interreflection, shadowed highlights).
``"diffuse_all"`` is ``"diffuse"`` without the ``(1 - metallic)`` factor: every surface, metals
included, gets ``base_colour * shadow * E(n) / pi``. Blender's rough multiscatter metals look much
like diffuse surfaces of their colour under an environment, and the small model's heads call
dielectric patches metallic, which the factor then darkens (issue 16: on the same weights it lifts
``gbuffer_forward`` from 24.46 to 25.87 dB; the bundled model ships with it).
``"pbr_dielectric"`` is ``"pbr"`` with every surface a dielectric: the diffuse term of
``"diffuse_all"`` plus the glossy term with ``F0 = 0.04``, so predicted metallic is not used for
radiance at all (the bundled model cannot tell held-out metals apart; issue 16).
``glossy_weight`` (default 1) scales the glossy term of both pbr priors: a model that cannot tell
metals apart nor predict roughness exactly draws highlights that are on average too strong, and
:mod:`near_blender.train.glossy_fit` fits the weight on the training assets (the bundled model: 0.45).
It is an inductive bias for small models trained on little data (the bundled CPU model); the
weights are the same, only how the output is used changes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import NearError
from .encodings import nerf_encoding, nerf_encoding_dim
from .model_config import merge_config
from .registry import register_model

ACTIVATIONS = ("sine", "relu", "silu", "gelu")
SHADING_PRIORS = ("none", "diffuse", "diffuse_all", "pbr", "pbr_dielectric")
# priors whose diffuse term skips metals (the (1 - metallic) factor); the others keep it for all
DIFFUSE_SKIPS_METALS = ("diffuse", "pbr")
# priors with the split-sum glossy term; "pbr_dielectric" reflects like a dielectric everywhere
GLOSSY_PRIORS = ("pbr", "pbr_dielectric")


class Sine(nn.Module):
    """``sin(w0 x)``."""

    def __init__(self, w0: float = 30.0) -> None:
        super().__init__()
        self.w0 = float(w0)

    def forward(self, x: Tensor) -> Tensor:
        return torch.sin(self.w0 * x)


@register_model("NeuralBasis", "RadianceMLP")
class RadianceMLP(nn.Module):
    """``forward(features [M, F], normals [M, 3]) -> [M, output_dim]`` (see the module docstring).

    Constructor arguments use the published names; ``n_extra`` is an alternative to
    ``output_dim`` (``output_dim = 3 + n_extra``). ``pretrained_path`` is accepted for checkpoint
    JSON compatibility and ignored.
    """

    PUBLISHED_NAME = "NeuralBasis"
    RADIANCE_CHANNELS = 3
    ELU_ALPHA = 1e-3

    def __init__(
        self, input_dim: int = 32, output_dim: int = 3, hidden_dim: int = 64, num_layers: int = 3,
        num_frequencies: int = 6, activation: str = "sine", w0: float = 30.0, dropout_rate: float = 0.0,
        use_normal: bool = True, normal_dim: int = 3, use_residual: bool = False,
        pretrained_path: str | None = None, n_extra: int | None = None, shading_prior: str = "none",
        glossy_weight: float = 1.0,
    ) -> None:  # fmt: skip
        super().__init__()
        if shading_prior not in SHADING_PRIORS:
            raise NearError(f"Unknown shading_prior {shading_prior!r}; use one of {SHADING_PRIORS}.")
        self.shading_prior = shading_prior
        self.set_glossy_weight(glossy_weight)
        if n_extra is not None:
            if n_extra < 0 or (output_dim not in (3, 3 + n_extra)):
                raise NearError(
                    f"n_extra={n_extra} contradicts output_dim={output_dim} (output_dim = 3 + n_extra)."
                )
            output_dim = 3 + n_extra
        if output_dim < 3:
            raise NearError(f"The radiance MLP needs at least 3 outputs (RGB radiance), got {output_dim}.")
        if num_layers < 2:
            raise NearError(f"The radiance MLP needs at least 2 layers, got {num_layers}.")
        if activation not in ACTIVATIONS:
            raise NearError(f"Unknown activation {activation!r}; use one of {ACTIVATIONS}.")
        if use_residual:
            raise NearError("Residual radiance MLPs are not supported; use use_residual=False.")
        self.input_dim, self.output_dim, self.hidden_dim = input_dim, output_dim, hidden_dim
        self.num_frequencies, self.use_normal, self.normal_dim = num_frequencies, use_normal, normal_dim
        self.activation_type, self.w0 = activation, float(w0)
        self.pretrained_path = pretrained_path
        in_dim = input_dim + (nerf_encoding_dim(normal_dim, num_frequencies) if use_normal else 0)

        act: nn.Module = {"sine": Sine(w0), "relu": nn.ReLU(), "silu": nn.SiLU(), "gelu": nn.GELU()}[
            activation
        ]
        layers: list[nn.Module] = []
        dims = [in_dim] + [hidden_dim] * (num_layers - 1)
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), act]
            if dropout_rate > 0:
                layers.append(nn.Dropout(dropout_rate))
        layers.append(nn.Linear(hidden_dim, output_dim))
        self.mlp = nn.Sequential(*layers)
        self._init_weights()

    def set_glossy_weight(self, weight: float) -> None:
        """Scale of the pbr priors' glossy term (kept in the saved ``{name, args}`` config too)."""
        if not (math.isfinite(weight) and weight >= 0):
            raise NearError(f"glossy_weight must be a finite number >= 0, got {weight!r}.")
        self.glossy_weight = float(weight)
        config = getattr(self, "near_config", None)
        if config is not None:
            config["args"]["glossy_weight"] = float(weight)

    @property
    def n_extra(self) -> int:
        return self.output_dim - self.RADIANCE_CHANNELS

    @classmethod
    def paper_config(cls, **overrides: Any) -> dict[str, Any]:
        """Published: 32-d colour feature + 6-frequency normal encoding, 64 x 3 sine layers, 3 + 2 outputs."""
        base = {
            "input_dim": 32,
            "output_dim": 5,
            "hidden_dim": 64,
            "num_layers": 3,
            "num_frequencies": 6,
            "activation": "sine",
            "w0": 30.0,
            "dropout_rate": 0.0,
            "use_normal": True,
            "normal_dim": 3,
            "use_residual": False,
            "pretrained_path": None,
        }
        return merge_config(cls, base, overrides)

    @classmethod
    def tiny_config(cls, **overrides: Any) -> dict[str, Any]:
        """Matches the tiny lighting-aware decoder (8-d colour feature), hidden 32."""
        return merge_config(cls, cls.paper_config(input_dim=8, hidden_dim=32), overrides)

    def _init_weights(self) -> None:
        linears = [m for m in self.mlp if isinstance(m, nn.Linear)]
        with torch.no_grad():
            for i, m in enumerate(linears):
                n = m.weight.shape[1]
                if self.activation_type == "sine":
                    bound = 1.0 / n if i == 0 else math.sqrt(6.0 / n) / self.w0
                    m.weight.uniform_(-bound, bound)
                    m.bias.uniform_(-1.0 / n, 1.0 / n)
                else:
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.zeros_(m.bias)

    def forward(self, features: Tensor, normals: Tensor | None = None) -> Tensor:
        if features.ndim != 2 or features.shape[1] != self.input_dim:
            raise NearError(f"Colour features must be [M, {self.input_dim}], got {tuple(features.shape)}.")
        x = features
        if self.use_normal:
            if normals is None or normals.shape != (features.shape[0], self.normal_dim):
                got = None if normals is None else tuple(normals.shape)
                raise NearError(f"Normals must be [{features.shape[0]}, {self.normal_dim}], got {got}.")
            n = F.normalize(normals.to(features.dtype), dim=-1)
            x = torch.cat([features, nerf_encoding(n, self.num_frequencies)], dim=-1)
        out = self.mlp(x)
        rad = F.elu(out[:, : self.RADIANCE_CHANNELS], alpha=self.ELU_ALPHA)
        return torch.cat([rad, torch.sigmoid(out[:, self.RADIANCE_CHANNELS :])], dim=-1)

    def radiance(self, features: Tensor, normals: Tensor | None = None) -> Tensor:
        """Only the HDR radiance ``[M, 3]``."""
        return self(features, normals)[:, : self.RADIANCE_CHANNELS]
