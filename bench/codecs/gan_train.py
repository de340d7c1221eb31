"""What the GAN codec contributes to ``bench.train``: its models, optimisers and one step.

The paper's recipe (Löhdefink et al., section V-C): Adam, learning rate 2e-4, batch 1,
Cityscapes train at half resolution, 50 epochs; the reference code's Adam beta1 = 0.5. One
step updates the multi-scale discriminator on (x, x_hat) with the least-squares loss, then
the generator with LSGAN + feature matching + MSE (``GanConfig`` weights). With ``gan_weight``
and ``fm_weight`` both 0 the discriminator is skipped (a plain MSE autoencoder).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import torch

from bench.codecs.gan import (
    GanConfig,
)
from bench.codecs.gan_model import (
    GanGenerator,
    MultiScaleDiscriminator,
    discriminator_loss,
    generator_loss,
)
from bench.train import AmpContext, to_signed

PAPER_LEARNING_RATE = 2e-4
PAPER_BETAS = (0.5, 0.999)
PAPER_EPOCHS = 50


class GanTrainable:
    """The GAN autoencoder as a ``bench.train.Trainable``.

    Args:
        config: the architecture and loss weights (F, L, width, ...).
        device: where the networks live.
        learning_rate, betas: Adam's, for both networks.
    """

    name = "gan"

    def __init__(
        self,
        config: GanConfig,
        *,
        device: str = "cpu",
        learning_rate: float = PAPER_LEARNING_RATE,
        betas: tuple[float, float] = PAPER_BETAS,
    ) -> None:
        self.gan_config = config
        self.generator = GanGenerator(config).to(device)
        self.discriminator = MultiScaleDiscriminator(config).to(device)
        self.adversarial = config.gan_weight > 0 or config.fm_weight > 0
        self.learning_rate, self.betas = float(learning_rate), (float(betas[0]), float(betas[1]))
        self._optimizers = {
            "generator": torch.optim.Adam(
                self.generator.parameters(), lr=self.learning_rate, betas=self.betas
            ),
            "discriminator": torch.optim.Adam(
                self.discriminator.parameters(), lr=self.learning_rate, betas=self.betas
            ),
        }

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"generator": self.generator, "discriminator": self.discriminator}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return dict(self._optimizers)

    def config(self) -> dict[str, Any]:
        return asdict(self.gan_config)

    def checkpoint_extra(self) -> dict[str, Any]:
        return {"optimiser": {"name": "adam", "lr": self.learning_rate, "betas": list(self.betas)}}

    def step(self, batch: torch.Tensor, amp: AmpContext) -> dict[str, float]:
        """One discriminator update, then one generator update, on a [0, 1] batch.

        Returns the losses and the batch's PSNR in dB (on 0..255, from the MSE on [-1, 1]).
        """
        x = to_signed(batch)
        out: dict[str, float] = {}
        with amp.autocast():
            x_hat, _ = self.generator(x)
        if self.adversarial:
            with amp.autocast():
                d_loss = discriminator_loss(
                    self.discriminator(x), self.discriminator(x_hat.detach())
                )
            amp.backward(d_loss, self._optimizers["discriminator"])
            out["d"] = float(d_loss.detach())
            with amp.autocast():
                with torch.no_grad():
                    real = self.discriminator(x)
                fake = self.discriminator(x_hat)
                losses = generator_loss(self.gan_config, x, x_hat, real, fake)
        else:
            with amp.autocast():
                mse = torch.nn.functional.mse_loss(x_hat, x)
            zero = torch.zeros((), device=x.device)
            losses = {"total": self.gan_config.mse_weight * mse, "gan": zero,
                      "feature_matching": zero, "mse": mse}  # fmt: skip
        amp.backward(losses["total"], self._optimizers["generator"])
        out.update({f"g_{k}" if k != "mse" else k: float(v.detach()) for k, v in losses.items()})
        out["psnr"] = psnr_of_signed_mse(out["mse"])
        return out


def psnr_of_signed_mse(mse: float) -> float:
    """PSNR in dB of an MSE measured on images scaled to [-1, 1] (peak-to-peak 2).

    >>> round(psnr_of_signed_mse(4 / 255**2), 6)  # one 8-bit step of error everywhere
    48.130804
    """
    return math.inf if mse <= 0 else 10.0 * math.log10(4.0 / mse)
