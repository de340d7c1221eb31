"""A toy learned codec from a third-party plugin: a tiny conv autoencoder, its trainer and its
codec, registered through entry points (``bench.trainers`` and ``bench.codecs``) by
``tests/test_trainers.py``, to show that a new learned codec needs no change to bench.

Bitstream: ``b"TOY1"``, height and width (u16 each), the latent's channels, rows and columns
(u8, u16, u16), the quantisation step (f32), the first 8 bytes of the weights' SHA-256, then
the zlib-compressed int8 latent (quantised, clipped to -127..127). The rate point ``q`` (1..8)
sets the step: 2 / q.
"""

from __future__ import annotations

import argparse
import hashlib
import struct
import zlib
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from bench.codecs.base import Availability, Codec, Image, RateScale, check_image
from bench.errors import CodecError, CodecUnavailable
from bench.training import AmpContext, ImageSampler, Trainable, Training, TrainingOptions
from bench.weights import load_strict, read_checkpoint

NAME = "toy"
LATENT = 4
MAGIC = b"TOY1"
HEADER = struct.Struct(">4sHHBHHf8s")


class ToyAutoencoder(nn.Module):
    """Two stride-2 convolutions down to ``LATENT`` maps at 1/4 size, two transposed ones up."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, width, 3, 2, 1), nn.ReLU(), nn.Conv2d(width, LATENT, 3, 2, 1)
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(LATENT, width, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(width, 3, 4, 2, 1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.encoder(x)
        noisy = y + (torch.rand_like(y) - 0.5)  # uniform noise stands in for rounding
        return self.decoder(noisy)


class ToyTrainable:
    """The autoencoder as a ``bench.training.Trainable``: MSE plus a small latent penalty."""

    name = NAME

    def __init__(self, width: int, learning_rate: float, device: str = "cpu") -> None:
        self.width, self.learning_rate = width, learning_rate
        self.model = ToyAutoencoder(width).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=learning_rate)

    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"main": self.optimizer}

    def config(self) -> dict[str, Any]:
        return {"width": self.width}

    def hyperparameters(self) -> dict[str, Any]:
        return {"lr": self.learning_rate}

    def step(self, batch: torch.Tensor, amp: AmpContext) -> Mapping[str, float]:
        with amp.autocast():
            x_hat = self.model(batch)
            mse = torch.nn.functional.mse_loss(x_hat, batch)
            loss = mse + 1e-4 * self.model.encoder(batch).abs().mean()
        amp.backward(loss, self.optimizer)
        return {"loss": float(loss.detach()), "mse": float(mse.detach())}


class ToyTraining(Training):
    """``bench train toy``: the toy autoencoder."""

    name = NAME
    description = "a toy conv autoencoder (tests)"
    defaults: ClassVar[dict[str, Any]] = {"crop": "16x16", "batch_size": 2}

    def __init__(self, width: int, learning_rate: float) -> None:
        self.width, self.learning_rate = width, learning_rate

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--width", type=int, default=8, help="hidden channels (8)")
        parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ToyTraining:
        return cls(args.width, args.lr)

    def build(self, options: TrainingOptions, sampler: ImageSampler) -> Trainable:
        # Not seeded here: `bench train` seeds before it builds, so a plugin need not.
        return ToyTrainable(self.width, self.learning_rate, options.device)


class ToyCodec(Codec):
    """The toy autoencoder's codec; ``weights`` is a ``bench train toy`` checkpoint."""

    name = NAME
    description = "toy conv autoencoder (tests)"
    rate_scale = RateScale("q", 1, 8, quality_rises=True)
    ceiling = None
    default_rates = (2, 8)

    def __init__(self, *, weights: str = "") -> None:
        super().__init__()
        if not weights:
            raise CodecUnavailable("toy: needs weights=CHECKPOINT (bench train toy)")
        checkpoint = read_checkpoint(weights, NAME, what="toy")  # format bench-toy-1
        self.model = ToyAutoencoder(int(checkpoint["config"]["width"])).eval()
        load_strict(self.model, checkpoint["model"], weights, "toy autoencoder")
        digest = hashlib.sha256()
        for key, tensor in sorted(self.model.state_dict().items()):
            digest.update(key.encode() + tensor.numpy().tobytes())
        self.identity = digest.digest()[:8]
        self.options = {"weights": str(weights)}

    @classmethod
    def availability(cls) -> Availability:
        return Availability(True, f"torch {torch.__version__}")

    def encode(self, image: Image, rate: float) -> bytes:
        image = check_image(image, self.name)
        height, width = image.shape[:2]
        step = 2.0 / float(self.scale.validate(rate, self.name))
        pad_h, pad_w = -height % 4, -width % 4
        x = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255
        x = torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        with torch.inference_mode():
            y = self.model.encoder(x)[0]
        q = torch.clamp(torch.round(y / step), -127, 127).to(torch.int8).numpy()
        header = HEADER.pack(MAGIC, height, width, q.shape[0], q.shape[1], q.shape[2], step,
                             self.identity)  # fmt: skip
        return header + zlib.compress(q.tobytes(), 9)

    def decode(self, data: bytes) -> Image:
        magic, height, width, c, h, w, step, identity = HEADER.unpack_from(data)
        if magic != MAGIC or identity != self.identity:
            raise CodecError("toy: not a bitstream of these weights")
        q = np.frombuffer(zlib.decompress(data[HEADER.size :]), np.int8).reshape(c, h, w)
        y = torch.from_numpy(q.astype(np.float32) * step)[None]
        with torch.inference_mode():
            x_hat = self.model.decoder(y)[0, :, :height, :width]
        pixels = x_hat.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0)
        return np.ascontiguousarray(pixels.numpy())
