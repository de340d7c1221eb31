"""CompressAI's zoo architectures behind the codec contract, with real entropy-coded bitstreams.

Encoding runs the model's ``compress`` and decoding its ``decompress``. The bitstream is
self-contained: a header (magic, model identity, image size, padding, latent shape) followed
by the entropy-coded strings, so bpp counts everything a receiver needs beyond the weights.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bench.codecs.base import Availability, Codec, Image, RateScale, check_image, choice
from bench.errors import CodecError, CodecUnavailable

MAGIC = b"BLC1"
PAD_MULTIPLE = 64  # 2**6: the deepest zoo models down-sample six times (hyperprior)
METRICS = ("mse", "ms-ssim")
_HINT = (
    "pip install compressai==1.2.8 with torch and torchvision from the package index "
    "(pip --isolated install torch==2.13.0 torchvision==0.28.0)"
)


def _compressai() -> Any:
    try:
        import compressai
        import compressai.zoo
    except Exception as exc:  # ImportError, or torchvision failing to load its ops
        raise CodecUnavailable(f"CompressAI is not importable ({exc}); {_HINT}") from exc
    return compressai


def write_bitstream(
    model_id: str,
    size: tuple[int, int],
    padding: tuple[int, int, int, int],
    shape: tuple[int, ...],
    strings: list[list[bytes]],
) -> bytes:
    """Header then strings: every length is explicit, nothing is implied by the model."""
    ident = model_id.encode()
    parts = [
        MAGIC,
        struct.pack(">B", len(ident)),
        ident,
        struct.pack(">II", *size),
        struct.pack(">4H", *padding),
        struct.pack(">B", len(shape)),
        struct.pack(f">{len(shape)}H", *shape),
        struct.pack(">B", len(strings)),
    ]
    for group in strings:
        if len(group) != 1:
            raise CodecError(f"expected one string per latent for a single image, got {len(group)}")
        parts += [struct.pack(">I", len(group[0])), group[0]]
    return b"".join(parts)


def read_bitstream(data: bytes) -> dict[str, Any]:
    """Parse ``write_bitstream``'s output; raises CodecError on anything malformed."""
    try:
        if data[:4] != MAGIC:
            raise ValueError("not a bench learned-codec bitstream")
        at = 4
        (n,) = struct.unpack_from(">B", data, at)
        model_id = data[at + 1 : at + 1 + n].decode()
        at += 1 + n
        size = struct.unpack_from(">II", data, at)
        padding = struct.unpack_from(">4H", data, at + 8)
        (dims,) = struct.unpack_from(">B", data, at + 16)
        shape = struct.unpack_from(f">{dims}H", data, at + 17)
        at += 17 + 2 * dims
        (groups,) = struct.unpack_from(">B", data, at)
        at += 1
        strings = []
        for _ in range(groups):
            (length,) = struct.unpack_from(">I", data, at)
            chunk = data[at + 4 : at + 4 + length]
            if len(chunk) != length:
                raise ValueError("truncated string")
            strings.append([chunk])
            at += 4 + length
        if at != len(data):
            raise ValueError(f"{len(data) - at} trailing bytes")
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise CodecError(f"corrupt learned-codec bitstream: {exc}") from exc
    return {
        "model": model_id,
        "size": size,
        "padding": padding,
        "shape": shape,
        "strings": strings,
        "header_bytes": len(data) - sum(4 + len(s[0]) for s in strings),
    }


def pad_amounts(height: int, width: int, multiple: int = PAD_MULTIPLE) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) zero padding up to a multiple, centred as CompressAI's eval."""
    new_h, new_w = math.ceil(height / multiple) * multiple, math.ceil(width / multiple) * multiple
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return top, new_h - height - top, left, new_w - width - left


class ZooCodec(Codec):
    """Base of the zoo architectures: quality is the rate point, one model per quality.

    Options: ``metric`` mse or ms-ssim (the zoo trains one model set per metric); ``weights``:
    a checkpoint file in the zoo's format, a directory of them (zoo file names), or ``random``
    (randomly initialised, entropy tables built: for tests of the pipeline, not of quality);
    ``device`` cpu or cuda.
    """

    architecture: ClassVar[str]
    rate_scale = RateScale("quality", 1, 8, quality_rises=True)
    ceiling = None  # learned codecs have no near-lossless setting
    contract_options: ClassVar[dict[str, Any]] = {"weights": "random"}

    def __init__(self, *, metric: str = "mse", weights: str = "", device: str = "cpu") -> None:
        super().__init__()
        self.metric = choice(metric, METRICS, "metric")
        self.weights = str(weights)
        self.device = device
        self._models: dict[int, Any] = {}
        self.encode_info: dict[str, Any] = {}
        self.options = {"metric": self.metric, "weights": self.weights, "device": self.device}

    @classmethod
    def availability(cls) -> Availability:
        try:
            compressai = _compressai()
        except CodecUnavailable as exc:
            return Availability(False, str(exc), _HINT)
        return Availability(True, f"compressai {compressai.__version__}")

    def model_id(self, quality: int) -> str:
        return f"{self.architecture}/{self.metric}/{quality}"

    def _build(self, quality: int) -> Any:
        import torch

        compressai = _compressai()
        builder = getattr(compressai.zoo, self.architecture.replace("-", "_"))
        if self.weights == "random":
            torch.manual_seed(quality)
            return builder(quality=quality, metric=self.metric, pretrained=False)
        path = self._checkpoint(quality)
        from bench.tasks.base import load_state_dict, load_strict

        state = compressai.zoo.load_state_dict(load_state_dict(path))
        architecture = compressai.zoo.image.model_architectures[self.architecture]
        try:
            return architecture.from_state_dict(state)
        except (RuntimeError, KeyError, AttributeError, IndexError):
            # Name what does not fit: load into the quality's own architecture strictly.
            model = builder(quality=quality, metric=self.metric, pretrained=False)
            load_strict(model, state, path, f"{self.architecture} (quality {quality})")
            return model

    def _checkpoint(self, quality: int) -> Path:
        tag = "" if self.metric == "mse" else "-ms-ssim"
        name = f"{self.architecture}{tag}-{quality}-"
        if self.weights:
            path = Path(self.weights).expanduser()
            if path.is_file():
                return path
            found = sorted(path.glob(f"{name}*.pth*")) if path.is_dir() else []
            if found:
                return found[0]
            raise CodecUnavailable(
                f"{self.architecture}: no checkpoint {name}*.pth.tar in {path}; put the zoo's file "
                "there or pass weights=FILE"
            )
        raise CodecUnavailable(
            f"{self.architecture}: pass weights=DIR holding the zoo's {name}*.pth.tar (or a file): "
            "downloading the zoo's weights is not built yet"
        )

    def model(self, quality: int) -> Any:
        """The model for a quality, with its entropy tables built, cached."""
        if quality not in self._models:
            model = self._build(quality).eval().to(self.device)
            model.update(force=True)
            self._models[quality] = model
        return self._models[quality]

    def encode(self, image: Image, rate: float) -> bytes:
        import torch
        import torch.nn.functional as F

        quality = int(rate)
        image = check_image(image, self.architecture)
        model = self.model(quality)
        height, width = image.shape[:2]
        top, bottom, left, right = pad_amounts(height, width)
        x = (
            torch.from_numpy(np.array(image))
            .permute(2, 0, 1)[None]
            .float()
            .div(255)
            .to(self.device)
        )
        x = F.pad(x, (left, right, top, bottom), mode="constant", value=0.0)
        with torch.inference_mode():
            out = model.compress(x)
            likelihoods = model(x)["likelihoods"]
        bits = sum(float(-torch.log2(v).sum()) for v in likelihoods.values())
        data = write_bitstream(
            self.model_id(quality),
            (height, width),
            (top, bottom, left, right),
            tuple(int(s) for s in out["shape"]),
            out["strings"],
        )
        self.encode_info = {
            "bpp_estimated": bits / (height * width),
            "header_bytes": len(data) - sum(4 + len(s[0]) for s in out["strings"]),
            "padding": f"{top},{bottom},{left},{right}",
        }
        return data

    def decode(self, data: bytes) -> Image:
        import torch

        parsed = read_bitstream(data)
        architecture, metric, quality = parsed["model"].rsplit("/", 2)
        if (architecture, metric) != (self.architecture, self.metric):
            raise CodecError(
                f"bitstream is for {parsed['model']}, this codec is {self.model_id(0)[:-2]}"
            )
        model = self.model(int(quality))
        height, width = parsed["size"]
        top, _, left, _ = parsed["padding"]
        try:
            with torch.inference_mode():
                x_hat = model.decompress(parsed["strings"], torch.Size(parsed["shape"]))["x_hat"]
        except (RuntimeError, ValueError, IndexError) as exc:
            raise CodecError(f"{architecture}: cannot decompress: {exc}") from exc
        x_hat = x_hat[0, :, top : top + height, left : left + width].clamp(0, 1)
        return x_hat.mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def _zoo_codec(architecture: str, qualities: int = 8) -> type[ZooCodec]:
    return type(
        architecture.replace("-", "_").title().replace("_", "") + "Codec",
        (ZooCodec,),
        {
            "name": architecture,
            "architecture": architecture,
            "description": f"CompressAI zoo {architecture}, quality 1-{qualities}",
            "rate_scale": RateScale("quality", 1, qualities, quality_rises=True),
            "default_rates": tuple(float(q) for q in range(1, qualities + 1)),
            "__module__": __name__,
        },
    )


Bmshj2018FactorizedCodec = _zoo_codec("bmshj2018-factorized")
Bmshj2018HyperpriorCodec = _zoo_codec("bmshj2018-hyperprior")
Mbt2018MeanCodec = _zoo_codec("mbt2018-mean")
Mbt2018Codec = _zoo_codec("mbt2018")
Cheng2020AnchorCodec = _zoo_codec("cheng2020-anchor", 6)
Cheng2020AttnCodec = _zoo_codec("cheng2020-attn", 6)
