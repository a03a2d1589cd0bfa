"""Frame and resolution specs of ``near render``."""

from __future__ import annotations

import pytest

from near_blender import NearError
from near_blender.utils.frames import parse_frames, parse_resolution


def test_parse_frames():
    assert parse_frames("1-4,7") == [1, 2, 3, 4, 7]
    assert parse_frames(" 5 , 1..3, 2") == [5, 1, 2, 3]
    assert parse_frames("10-20:5") == [10, 15, 20]
    assert parse_frames("-2--1") == [-2, -1]
    for bad in ("", "a", "3-1", "1-4:0", "1,,2"):
        with pytest.raises(NearError):
            parse_frames(bad)


def test_parse_resolution():
    assert parse_resolution("1920x1080") == (1920, 1080)
    assert parse_resolution("64X48") == (64, 48)
    for bad in ("64", "0x5", "axb"):
        with pytest.raises(NearError):
            parse_resolution(bad)
