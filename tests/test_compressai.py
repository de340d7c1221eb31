"""CompressAI zoo codecs: real entropy-coded bitstreams that round-trip exactly."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from bench.codecs import CODECS, create_codec
from bench.codecs.compressai_codecs import pad_amounts, read_bitstream
from bench.datasets import open_dataset
from bench.errors import BenchError, CodecError
from bench.runner import plan_codec, run

ZOO = [
    "bmshj2018-factorized",
    "bmshj2018-hyperprior",
    "mbt2018-mean",
    "mbt2018",
    "cheng2020-anchor",
    "cheng2020-attn",
]
availability = CODECS.load("bmshj2018-hyperprior").availability()
pytestmark = pytest.mark.skipif(
    not availability.usable, reason=f"CompressAI not usable here: {availability.detail}"
)
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def crop(kodim):
    return np.ascontiguousarray(kodim(23)[100:197, 200:330])  # 97 x 130: needs padding


@pytest.mark.parametrize("name", ZOO)
def test_decoded_image_is_the_models_own_reconstruction(name, crop):
    codec = create_codec(name, {"weights": "random"})
    quality = 2
    data = codec.encode(crop, quality)
    parsed = read_bitstream(data)
    top, bottom, left, right = parsed["padding"]
    assert (top, bottom, left, right) == pad_amounts(97, 130) == (15, 16, 31, 31)
    model = codec.model(quality)
    x = torch.from_numpy(np.array(crop)).permute(2, 0, 1)[None].float() / 255
    x = torch.nn.functional.pad(x, (left, right, top, bottom))
    with torch.inference_mode():
        direct = model.compress(x)
        x_hat = model.decompress(direct["strings"], direct["shape"])["x_hat"]
    assert parsed["strings"] == direct["strings"]  # the same entropy-coded bytes
    expected = (x_hat[0, :, top : top + 97, left : left + 130].clamp(0, 1) * 255).round()
    expected = expected.to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(codec.decode(data), expected)
    assert len(data) == parsed["header_bytes"] + sum(4 + len(s[0]) for s in direct["strings"])
    info = codec.encode_info
    assert info["padding"] == "15,16,31,31" and info["header_bytes"] == parsed["header_bytes"]
    assert info["bpp_estimated"] > 0


def test_zoo_checkpoint_file_from_a_local_path(crop, tmp_path):
    reference = create_codec("bmshj2018-hyperprior", {"weights": "random"})
    state = reference.model(3).state_dict()
    torch.save(state, tmp_path / "bmshj2018-hyperprior-3-0123abcd.pth.tar")
    from_dir = create_codec("bmshj2018-hyperprior", {"weights": str(tmp_path)})
    data = from_dir.encode(crop, 3)
    assert data == reference.encode(crop, 3)
    assert np.array_equal(from_dir.decode(data), reference.decode(data))
    with pytest.raises(BenchError, match=r"no checkpoint bmshj2018-hyperprior-5-\*\.pth\.tar"):
        from_dir.encode(crop, 5)


def test_a_checkpoint_of_another_architecture_names_the_mismatch(crop, tmp_path):
    other = create_codec("bmshj2018-factorized", {"weights": "random"}).model(3).state_dict()
    path = tmp_path / "bmshj2018-hyperprior-3-deadbeef.pth.tar"
    torch.save(other, path)
    codec = create_codec("bmshj2018-hyperprior", {"weights": str(path)})
    with pytest.raises(
        BenchError,
        match=r"does not match the bmshj2018-hyperprior \(quality 3\) architecture: "
        r"missing \(\d+\): gaussian_conditional",
    ):
        codec.encode(crop, 3)


def test_corrupt_and_foreign_bitstreams(crop):
    codec = create_codec("mbt2018-mean", {"weights": "random"})
    data = codec.encode(crop, 1)
    with pytest.raises(CodecError, match=r"truncated|trailing|corrupt"):
        codec.decode(data[:-3])
    with pytest.raises(CodecError, match="bitstream is for mbt2018-mean/mse/1"):
        create_codec("mbt2018", {"weights": "random"}).decode(data)


def test_a_run_mixing_jpeg_and_a_learned_codec(kodak, tmp_path):
    dataset = open_dataset("kodak", {"data_dir": kodak})
    plans = [
        plan_codec("jpeg", rates=[20, 60]),
        plan_codec("bmshj2018-factorized", {"weights": "random"}, rates=[1, 4]),
    ]
    result = run(dataset, plans, tmp_path / "run", workers=2, limit=2)
    assert all(r.ok for r in result.records), [r.error for r in result.records if not r.ok]
    learned = [r for r in result.records if r.codec == "bmshj2018-factorized"]
    assert len(learned) == 4
    for record in learned:
        assert record.bpp == 8 * record.bytes / (record.height * record.width)
        assert record.bpp_estimated > 0 and record.header_bytes > 0 and record.padding
    assert all(
        r.bpp_estimated is None and r.padding == "" for r in result.records if r.codec == "jpeg"
    )
    with (result.directory / "aggregates.csv").open() as handle:
        assert {row["codec"] for row in csv.DictReader(handle)} == {"jpeg", "bmshj2018-factorized"}
    svg = (result.directory / "plots" / "rd_psnr.svg").read_text()
    assert "jpeg" in svg and "bmshj2018-factorized" in svg
