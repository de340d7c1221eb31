"""The registry: lazy built-ins, entry-point plugins, and suggestions."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from bench import registry as registry_module
from bench.codecs import CODECS
from bench.errors import UsageError
from bench.registry import Registry


def _with_plugins(monkeypatch, *entries: EntryPoint) -> None:
    monkeypatch.setattr(
        registry_module,
        "entry_points",
        lambda group: [e for e in entries if e.group == group],
    )


def test_plugin_codec_is_found_through_its_entry_point(monkeypatch):
    _with_plugins(
        monkeypatch, EntryPoint("fake-copy", "fake_codecs:FailingEncoder", "bench.codecs")
    )
    reg: Registry[object] = Registry("codecs", "bench.codecs")
    reg.add("jpeg", "bench.codecs.pillow_codecs:JpegCodec")
    assert reg.names() == ["jpeg", "fake-copy"]
    assert reg.load("fake-copy").__name__ == "FailingEncoder"
    assert reg.entry("fake-copy").source.startswith("plugin")


def test_plugin_cannot_replace_a_builtin(monkeypatch, caplog):
    _with_plugins(monkeypatch, EntryPoint("jpeg", "fake_codecs:FailingEncoder", "bench.codecs"))
    reg: Registry[object] = Registry("codecs", "bench.codecs")
    reg.add("jpeg", "bench.codecs.pillow_codecs:JpegCodec")
    assert reg.load("jpeg").__name__ == "JpegCodec"
    assert "ignoring plugin codec 'jpeg'" in caplog.text


def test_unknown_name_lists_close_matches_and_known_names():
    with pytest.raises(UsageError) as info:
        CODECS.entry("webb")
    assert "Did you mean 'webp'" in str(info.value)
    assert "jpeg2000" in str(info.value)


def test_every_builtin_codec_has_a_name_matching_its_key():
    for name in CODECS.names():
        assert CODECS.load(name).name == name
