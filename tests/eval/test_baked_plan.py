"""The baked baseline's bpy-free parts: the projector texture and the render settings."""

from __future__ import annotations

import numpy as np
import pytest

from near_blender import NearError
from near_blender.eval.baked import BakedRenders, projector_texture, render_config


def test_projector_texture_unpremultiplies_clips_and_dilates():
    rgba = np.zeros((5, 6, 4))
    rgba[1:3, 2:4] = [0.2, 0.1, 0.9, 0.5]  # premultiplied: straight (0.4, 0.2, 1.8) -> clipped blue 1
    rgba[2, 2] = [0.3, 0.3, 0.3, 1.0]
    tex = projector_texture(rgba)
    assert tex.shape == (5, 6, 3) and tex.dtype == np.float32
    np.testing.assert_allclose(tex[1, 2], [0.4, 0.2, 1.0], atol=1e-6)
    np.testing.assert_allclose(tex[2, 2], [0.3, 0.3, 0.3], atol=1e-6)
    # background: the mean of the covered 4-neighbours, then grown ring by ring
    np.testing.assert_allclose(tex[2, 1], [0.3, 0.3, 0.3], atol=1e-6)
    np.testing.assert_allclose(tex[0, 2], [0.4, 0.2, 1.0], atol=1e-6)
    assert np.all((tex >= 0) & (tex <= 1)) and np.isfinite(tex).all()
    with pytest.raises(NearError, match="no foreground"):
        projector_texture(np.zeros((4, 4, 4)))
    with pytest.raises(NearError, match="RGBA"):
        projector_texture(np.zeros((4, 4, 3)))


def test_render_settings_follow_the_dataset_unless_an_engine_is_named(tmp_path):
    gen = {"generation": {"engine": "cycles", "resolution": 48, "samples": 7, "denoise": False,
                          "holdout_envmaps": ["sunset"], "assets": {"count": 2}, "envmaps": ["sunset"]}}  # fmt: skip
    cfg = render_config(gen)
    assert (cfg.engine, cfg.resolution, cfg.samples, cfg.denoise) == ("cycles", 48, 7, False)
    assert render_config(gen, "eevee").blender_engine == "BLENDER_EEVEE"
    with pytest.raises(NearError, match="baked-baseline engine"):
        render_config(gen, "luxcore")
    # the cache is emptied when the settings change, kept when they do not
    r = BakedRenders.open(tmp_path, tmp_path / "data", gen, "dataset")
    (r.root / "a").mkdir()
    assert (BakedRenders.open(tmp_path, tmp_path / "data", gen, "dataset").root / "a").is_dir()
    assert not (BakedRenders.open(tmp_path, tmp_path / "data", gen, "eevee").root / "a").exists()
