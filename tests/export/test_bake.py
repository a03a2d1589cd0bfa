"""The bpy-free pieces of the PBR bake (issue 20): texels to surface points, points to the
Gaussians' attributes, gap filling."""

from __future__ import annotations

import numpy as np

from near_blender.export.bake import dilate, sample_attributes, uv_texels


def test_uv_texels_cover_each_texel_once_with_its_surface_point():
    S = 32
    uv = np.array([[[0, 0], [1, 0], [1, 1]], [[0, 0], [1, 1], [0, 1]]], float)  # the unit square
    pos = np.array(
        [[[0, 0, 1], [2, 0, 1], [2, 4, 1]], [[0, 0, 1], [2, 4, 1], [0, 4, 1]]], float
    )  # 2 x 4 at z = 1
    rows, cols, points = uv_texels(uv, pos, S)
    assert len(rows) == S * S and len(set((rows * S + cols).tolist())) == S * S
    np.testing.assert_allclose(points[:, 0], 2 * (cols + 0.5) / S, atol=1e-12)  # u -> x
    np.testing.assert_allclose(points[:, 1], 4 * (rows + 0.5) / S, atol=1e-12)  # v (row 0 at the bottom) -> y
    np.testing.assert_allclose(points[:, 2], 1.0)
    # a triangle over the upper-left half of the lower-left quarter: the texels above its diagonal, and on it
    rows, cols, _ = uv_texels(uv[:1, :, ::-1] * 0.5, pos[:1], S)
    assert ((cols <= rows) & (rows < S // 2) & (cols < S // 2)).all() and len(rows) == (S // 2) * (
        S // 2 + 1
    ) // 2
    # degenerate and off-texture triangles give nothing
    assert len(uv_texels(np.zeros((1, 3, 2)), pos[:1], S)[0]) == 0
    assert len(uv_texels(uv + 2.0, pos, S)[0]) == 0


def test_sample_attributes_is_the_density_weighted_mean_of_nearby_gaussians():
    rng = np.random.default_rng(0)
    cell = 1 / 64
    g = (
        np.stack(np.meshgrid(np.arange(64), np.arange(64), indexing="ij"), -1).reshape(-1, 2) + 0.5
    ) * cell - 0.5
    means = np.concatenate([g, np.zeros((len(g), 1))], 1) + rng.normal(0, cell / 4, (len(g), 3))
    quats = np.tile([1.0, 0, 0, 0], (len(g), 1))
    scales = np.tile([cell, cell, cell / 10], (len(g), 1))  # flat discs in the plane z = 0
    values = np.stack([means[:, 0] + 0.5, np.full(len(g), 0.3)], 1)
    opac = rng.uniform(0.2, 1.0, len(g))
    # a Gaussian with a negative opacity (the decoder allows them; the rasterizer skips them) adds nothing
    means = np.concatenate([means, [[0.1, 0.1, 0.0]]])
    quats, scales = np.concatenate([quats, [[1.0, 0, 0, 0]]]), np.concatenate([scales, [[cell, cell, cell]]])
    values, opac = np.concatenate([values, [[50.0, 50.0]]]), np.concatenate([opac, [-0.9]])
    pts = np.concatenate(
        [rng.uniform(-0.45, 0.45, (2000, 2)), rng.uniform(-cell / 2, cell / 2, (2000, 1))], 1
    )
    pts[0] = (0.1, 0.1, 0.0)
    out, found = sample_attributes(pts, means, quats, scales, opac, values, cell)
    assert found.all()
    np.testing.assert_allclose(out[found, 0], pts[found, 0] + 0.5, atol=0.02)  # a linear ramp is kept
    np.testing.assert_allclose(out[found, 1], 0.3, atol=1e-5)
    assert found[0] and abs(out[0, 0] - 0.6) < 0.02  # beside the negative-opacity Gaussian
    # the weights follow the Gaussians: two overlapping ones, the nearer (in its own metric) wins
    two = sample_attributes(np.array([[0.0, 0.0, 0.0]]), np.array([[0.0, 0.0, 0.004], [0.0, 0.0, -0.012]]),
                            np.tile([1.0, 0, 0, 0], (2, 1)), np.full((2, 3), 0.008), np.array([0.5, 0.5]),
                            np.array([[1.0], [0.0]]), cell)[0]  # fmt: skip
    w = np.exp(-0.5 * (np.array([0.004, 0.012]) / 0.008) ** 2)
    np.testing.assert_allclose(two[0, 0], w[0] / w.sum(), rtol=1e-5)
    # far from every Gaussian: not found, zero
    far, found_far = sample_attributes(np.array([[0.0, 0.0, 0.2]]), means, quats, scales, opac, values, cell)
    assert not found_far.any() and (far == 0).all()


def test_dilate_fills_gutters_from_filled_neighbours():
    img = np.zeros((6, 6, 2), np.float32)
    mask = np.zeros((6, 6), bool)
    img[2, 2], mask[2, 2] = (1.0, 2.0), True
    img[2, 3], mask[2, 3] = (3.0, 4.0), True
    out, grown = dilate(img, mask, steps=1)
    assert grown.sum() == 12 and not grown[5].any()  # the 3 x 4 block around the two texels
    np.testing.assert_allclose(out[1, 1], (1.0, 2.0))  # only (2, 2) is its neighbour
    np.testing.assert_allclose(out[1, 2], (2.0, 3.0))  # both are
    np.testing.assert_allclose(out[2, 2], (1.0, 2.0))  # filled texels keep their values
    assert dilate(img, mask, steps=10)[1].all()
