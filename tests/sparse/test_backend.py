"""The shared backend choice of sparse conv and attention: default, override, thread-local."""

from __future__ import annotations

import threading

import pytest

from near_blender import NearError
from near_blender.sparse import attention, conv
from near_blender.sparse.backend import BackendChoice


def test_default_override_and_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEAR_TEST_BACKEND", "b")
    choice = BackendChoice("test backend", ("auto", "a", "b"), "NEAR_TEST_BACKEND")
    assert choice.get() == "b"
    seen = []
    with choice.use("a"):
        assert choice.get() == "a"
        t = threading.Thread(target=lambda: seen.append(choice.get()))
        t.start()
        t.join()
    assert seen == ["b"] and choice.get() == "b"
    choice.set("auto")
    assert choice.get() == "auto"
    with pytest.raises(NearError, match="Unknown test backend 'c'"):
        choice.set("c")


def test_conv_and_attention_keep_their_names() -> None:
    with conv.conv_backend("torch"), attention.attention_backend("sdpa"):
        assert conv.get_conv_backend() == "torch" and attention.get_attention_backend() == "sdpa"
    with pytest.raises(NearError, match="Unknown sparse conv backend"):
        conv.set_conv_backend("nope")
    with pytest.raises(NearError, match="Unknown attention backend"):
        attention.set_attention_backend("nope")
