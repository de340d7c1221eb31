"""Checked downloads against a local HTTP server (never the internet)."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

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


def test_kodak_downloads_missing_images_with_checksums(server, kodak, tmp_path, monkeypatch):
    root, url = server
    for path in kodak.glob("kodim*.png"):
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
