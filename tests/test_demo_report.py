"""``near demo``'s bpy-free half: metrics against EEVEE and the contact sheet, on synthetic renders
(the whole demo runs Blender for minutes; `make demo` runs it)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from near_blender.commands import demo
from near_blender.render.exr import write_exr

S = 32


def _fake_demo(out: Path) -> dict:
    rng = np.random.default_rng(0)
    renders = []
    yy, xx = np.mgrid[0:S, 0:S]
    disc = (xx - 16) ** 2 + (yy - 16) ** 2 < 64  # the object
    for hdri in ("a", "b"):
        for view in ("front", "back"):
            bg = rng.uniform(0.2, 0.8, (S, S, 3))
            for engine, name in (("NEAR", "near"), ("BLENDER_EEVEE", "eevee")):
                img = bg.copy()
                img[disc] = 0.5 if engine == "NEAR" else 0.6  # differ by 0.1 on the object only
                stem = f"{name}_{hdri}_{view}"
                Image.fromarray((img * 255).round().astype(np.uint8)).save(out / f"{stem}.png")
                empty = 1e10 if engine == "NEAR" else 99.9  # NeAR's empty depth / EEVEE's clip end
                write_exr(out / f"{stem}.exr", {"ViewLayer.Depth.Z": np.where(disc, 2.0, empty)}, half=False)
                renders.append({"engine": engine, "hdri": hdri, "view": view, "png": f"{stem}.png",
                                "exr": f"{stem}.exr", "seconds": 1.0 if engine == "NEAR" else 5.0})  # fmt: skip
    Image.fromarray(np.zeros((S, S, 4), np.uint8)).save(out / "input.png")
    record = {"renders": renders, "hdris": ["a", "b"], "views": ["front", "back"], "resolution": S,
              "input": "input.png", "clip_end": 100.0}  # fmt: skip
    (out / "demo.json").write_text(json.dumps(record))
    return record


def test_compare_and_contact_sheet(tmp_path):
    record = _fake_demo(tmp_path)
    rows = demo.compare(tmp_path, record)
    assert len(rows) == 4
    yy, xx = np.mgrid[0:S, 0:S]
    disc_frac = float(((xx - 16) ** 2 + (yy - 16) ** 2 < 64).mean())
    for r in rows:
        # 8-bit quantization: 0.5 -> 128/255, 0.6 -> 153/255
        d = (153 - 128) / 255
        assert abs(r["psnr_object"] - 10 * math.log10(1 / d**2)) < 1e-6
        assert abs(r["psnr"] - 10 * math.log10(1 / (d**2 * disc_frac))) < 1e-6
        assert abs(r["object_fraction"] - disc_frac) < 1e-9
        assert 0.5 < r["ssim"] < 1.0 and r["near_s"] == 1.0 and r["eevee_s"] == 5.0
    sheet = Image.open(demo.contact_sheet(tmp_path, record, rows))
    assert sheet.size == (72 + 5 * S, 16 + 2 * S)
    px = np.asarray(sheet.convert("RGB"))
    # NeAR front of HDRI 'a' sits in column 1, EEVEE front in column 2: their object centres differ
    c_near = px[16 + 16, 72 + S + 16]
    c_eevee = px[16 + 16, 72 + 2 * S + 16]
    assert tuple(c_near) == (128, 128, 128) and tuple(c_eevee) == (153, 153, 153)


def test_speckle_is_the_laplacian_energy_of_the_object_ours_over_eevee(tmp_path):
    from near_blender.train.metrics import mean_abs_laplacian

    # hand values: a single bright pixel in a flat field has |Laplacian| 4 at itself, 1 at its four
    # neighbours and 0 elsewhere
    img = np.zeros((5, 5, 1))
    img[2, 2] = 1.0
    inner = np.ones((5, 5), bool)  # interior pixels: the 3x3 centre
    assert abs(mean_abs_laplacian(img, inner) - (4 + 4 * 1) / 9) < 1e-12
    assert math.isnan(mean_abs_laplacian(img, np.zeros((5, 5), bool)))

    record = _fake_demo(tmp_path)
    yy, xx = np.mgrid[0:S, 0:S]
    disc = (xx - 16) ** 2 + (yy - 16) ** 2 < 64
    rng = np.random.default_rng(1)
    for r in record["renders"]:  # NeAR speckled (+-0.1), EEVEE with a smooth gradient
        img = np.asarray(Image.open(tmp_path / r["png"]), np.float64) / 255
        if r["engine"] == "NEAR":
            img[disc] = 0.5 + rng.uniform(-0.1, 0.1, (int(disc.sum()), 3))
        else:
            img[disc] = (0.3 + 0.02 * xx[disc])[:, None]
        Image.fromarray((img * 255).round().astype(np.uint8)).save(tmp_path / r["png"])
    rows = demo.compare(tmp_path, record)
    # uniform noise of half-width 0.1: E|4a - b - c - d - e| is about 0.26; the gradient's Laplacian
    # is 0 but for 8-bit rounding (a few 1/255): the ratio is large
    for r in rows:
        assert r["speckle"] > 10
