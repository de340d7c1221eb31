"""Checked downloads against a local HTTP server (never the internet)."""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.archives import extract
from bench.datasets import open_dataset
from bench.datasets.kodak import KodakDataset
from bench.download import download
from bench.errors import DatasetError


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def test_matching_checksum_keeps_the_file(server, tmp_path):
    root, url = server
    (root / "a.bin").write_bytes(b"payload" * 1000)
    digest = hashlib.sha256(b"payload" * 1000).hexdigest()
    target = tmp_path / "out" / "a.bin"
    assert download(url + "a.bin", target, digest) == target
    assert target.read_bytes() == b"payload" * 1000
    assert [p.name for p in target.parent.iterdir()] == ["a.bin"]  # no partial file left


def test_checksum_mismatch_keeps_nothing(server, tmp_path):
    root, url = server
    (root / "a.bin").write_bytes(b"tampered")
    target = tmp_path / "out" / "a.bin"
    with pytest.raises(DatasetError, match="checksum mismatch"):
        download(url + "a.bin", target, "0" * 64)
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_unreachable_server_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match=r"cannot download .*--data-dir"):
        download("http://127.0.0.1:9/absent", tmp_path / "x", "0" * 64)


def test_kodak_downloads_missing_images_with_checksums(
    server, real_kodak, tmp_path, monkeypatch
):
    root, url = server
    for path in real_kodak.glob("kodim*.png"):
        (root / path.name).write_bytes(path.read_bytes())
    monkeypatch.setenv("BENCH_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("BENCH_KODAK_DIR", raising=False)
    dataset = KodakDataset()
    dataset.manifest = {**dataset.manifest, "base_url": url}
    assert not dataset.status().available
    refs = dataset.refs()
    assert len(refs) == 24 and all(r.path.is_file() for r in refs)
    assert dataset.status().available and dataset.verify() == {}
    # A corrupted copy on the server is refused.
    (tmp_path / "data" / "kodak" / "kodim05.png").unlink()
    (root / "kodim05.png").write_bytes(b"not kodak")
    with pytest.raises(DatasetError, match=r"checksum mismatch for .*kodim05\.png"):
        dataset.refs()


def test_a_given_directory_missing_images_is_named(tmp_path):
    (tmp_path / "kodim01.png").write_bytes(b"")
    with pytest.raises(DatasetError, match="lacks 23 of the 24 images"):
        KodakDataset(data_dir=tmp_path).refs()


def test_offline_without_data_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_DATA_HOME", str(Path(tmp_path) / "empty"))
    monkeypatch.delenv("BENCH_KODAK_DIR", raising=False)
    with pytest.raises(DatasetError, match="--data-dir"):
        KodakDataset(download=False).refs()


# --- archives --------------------------------------------------------------------------------


def _zip(path: Path, members: dict[str, bytes]) -> bytes:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path.read_bytes()


def _png(kodak: Path, number: int) -> bytes:
    return (kodak / f"kodim{number:02d}.png").read_bytes()


def test_clic_downloads_checks_and_extracts_a_split(server, kodak, tmp_path, monkeypatch):
    root, url = server
    archive = _zip(
        root / "professional_valid_2020.zip",
        {
            "valid/a.png": _png(kodak, 1),
            "valid/b.png": _png(kodak, 2),
            "__MACOSX/valid/._a.png": b"resource fork",
        },
    )
    monkeypatch.setenv("BENCH_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("BENCH_CLIC_DIR", raising=False)
    dataset = open_dataset("clic", {"split": "professional-valid"})
    dataset.info = {
        **dataset.info,
        "url": url + "professional_valid_2020.zip",
        "sha256": hashlib.sha256(archive).hexdigest(),
        "bytes": len(archive),
        "images": 2,
    }
    assert not dataset.status().available
    refs = dataset.refs()
    assert [r.id for r in refs] == ["valid/a", "valid/b"]
    assert np.array_equal(
        dataset.load(refs[1]).image, np.asarray(Image.open(kodak / "kodim02.png"))
    )
    assert dataset.status().available
    assert not (tmp_path / "data/clic/professional-valid/__MACOSX").exists()


def test_clic_archive_with_a_wrong_checksum_is_not_used(server, tmp_path, monkeypatch):
    root, url = server
    _zip(root / "mobile_valid_2020.zip", {"valid/a.png": b"x"})
    monkeypatch.setenv("BENCH_DATA_HOME", str(tmp_path / "data"))
    dataset = open_dataset("clic", {"split": "mobile-valid"})
    dataset.info = {**dataset.info, "url": url + "mobile_valid_2020.zip"}  # the real checksum
    with pytest.raises(DatasetError, match="checksum mismatch"):
        dataset.refs()
    assert not (tmp_path / "data/clic/mobile-valid").exists()


def test_clic_2018_is_local_only(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_DATA_HOME", str(tmp_path))
    monkeypatch.delenv("BENCH_CLIC_DIR", raising=False)
    with pytest.raises(DatasetError, match=r"local directory only.*--data-dir"):
        open_dataset("clic", {"split": "professional-test-2018"}).refs()


@pytest.mark.parametrize("member", ["../evil.png", "/etc/evil.png", "valid/../../evil.png"])
def test_zip_members_outside_the_target_are_refused(tmp_path, member):
    archive = tmp_path / "bad.zip"
    _zip(archive, {"valid/ok.png": b"fine", member: b"evil"})
    target = tmp_path / "out" / "inner"
    with pytest.raises(DatasetError, match="would extract outside"):
        extract(archive, target)
    assert not any(target.rglob("*")), "nothing is written when any member is unsafe"
    assert not (tmp_path / "evil.png").exists() and not (tmp_path / "out" / "evil.png").exists()


def test_tar_links_and_escapes_are_refused(tmp_path):
    def make(name: str, add) -> Path:
        path = tmp_path / name
        with tarfile.open(path, "w:gz") as tf:
            add(tf)
        return path

    def add_link(tf):
        info = tarfile.TarInfo("valid/link.png")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(info)

    def add_escape(tf):
        info = tarfile.TarInfo("../escape.png")
        info.size = 4
        tf.addfile(info, io.BytesIO(b"evil"))

    with pytest.raises(DatasetError, match="link or device"):
        extract(make("link.tar.gz", add_link), tmp_path / "a")
    with pytest.raises(DatasetError, match="would extract outside"):
        extract(make("escape.tar.gz", add_escape), tmp_path / "b")
    assert not (tmp_path / "escape.png").exists()

    def add_good(tf):
        info = tarfile.TarInfo("valid/ok.png")
        info.size = 4
        tf.addfile(info, io.BytesIO(b"good"))

    written = extract(make("good.tar.gz", add_good), tmp_path / "c")
    assert [p.read_bytes() for p in written] == [b"good"]


def test_a_corrupt_archive_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.zip"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DatasetError, match=r"broken\.zip: cannot extract"):
        extract(bad, tmp_path / "out")


# --- checkpoints -----------------------------------------------------------------------------


def test_checkpoint_urls_need_a_checksum_and_are_cached(server, tmp_path, monkeypatch):
    from bench.checkpoints import resolve_checkpoint
    from bench.errors import BenchError

    root, url = server
    (root / "model.pth").write_bytes(b"weights" * 100)
    digest = hashlib.sha256(b"weights" * 100).hexdigest()
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    with pytest.raises(BenchError, match=r"needs its SHA-256"):
        resolve_checkpoint(url + "model.pth")
    with pytest.raises(DatasetError, match="checksum mismatch"):
        resolve_checkpoint(url + "model.pth", "f" * 64)
    cached = resolve_checkpoint(url + "model.pth", digest)
    assert (
        cached.read_bytes() == b"weights" * 100 and cached.parent == tmp_path / "cache/checkpoints"
    )
    (root / "model.pth").unlink()  # the cached copy is used from now on
    assert resolve_checkpoint(url + "model.pth", digest) == cached
    assert resolve_checkpoint(str(cached), digest) == cached
    with pytest.raises(BenchError, match="SHA-256 differs"):
        resolve_checkpoint(str(cached), "0" * 64)
