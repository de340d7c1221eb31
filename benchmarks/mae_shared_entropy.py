"""What one entropy model for every lambda costs ``mae`` in rate, on the same transform.

    OMP_NUM_THREADS=1 python benchmarks/mae_shared_entropy.py mae.pt --data-dir IMAGES \\
        --out-dir OUT [--steps 4000] [--crops 2048] [--seed 0]

A ``mae`` checkpoint trained with one entropy bottleneck per lambda is taken as it is: its
analysis and synthesis transforms and modulation networks stay frozen, so every lambda's
latent y, and so (up to each model's median offset) its rounded latent and its reconstruction,
are the same below. Only the densities are fitted again, the same way twice:

* ``OUT/per-lambda.pt``: one fresh ``EntropyBottleneck`` per lambda, each on its lambda's y;
* ``OUT/shared.pt``: one fresh ``EntropyBottleneck`` on the y of every lambda
  (``shared_entropy_model``), which can then code any lambda.

Both fits see the same 128 x 128 crops of ``--data-dir`` (drawn once, seeded), the same
steps, Adam 1e-3 then 1e-4 for the last quarter on the bits of y + U(-1/2, 1/2) (as in
training), and the auxiliary loss for the quantiles. Both are ``bench-mae-1`` checkpoints that
``bench run`` codes with real bitstreams; their ``training`` record says they were refitted,
from which checkpoint. Compare them, with ``CKPT`` (its trained densities) beside them:

    bench run --codecs mae --rates mae=64,256,1024,4096 \\
        --codec-option mae.weights=OUT/shared.pt ...

The refit per-lambda model isolates the fit (against CKPT's own densities); the shared model
against it is the cost of one density for every lambda, at equal distortion. Run by hand; the
numbers go in the notes and the README, never in a test.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from compressai.entropy_models import EntropyBottleneck

from bench.codecs.learned.mae.checkpoint import load_mae_checkpoint, read_mae_checkpoint
from bench.codecs.learned.mae.model import MaeConfig, MaeNetwork
from bench.images import list_images, read_rgb8

CROP = 128


def crops_of(directory: Path, count: int, seed: int) -> torch.Tensor:
    """``count`` random CROP x CROP crops (N, 3, CROP, CROP) on [0, 1], images drawn
    uniformly, positions uniform; seeded."""
    paths = list_images(directory)
    if not paths:
        raise SystemExit(f"{directory}: no images")
    images = [read_rgb8(p).pixels for p in paths]
    rng = np.random.default_rng(seed)
    out = np.empty((count, CROP, CROP, 3), dtype=np.uint8)
    for index in range(count):
        image = images[int(rng.integers(len(images)))]
        top = int(rng.integers(image.shape[0] - CROP + 1))
        left = int(rng.integers(image.shape[1] - CROP + 1))
        out[index] = image[top : top + CROP, left : left + CROP]
    return torch.from_numpy(out).permute(0, 3, 1, 2).float() / 255.0


@torch.no_grad()
def latents_of(model: MaeNetwork, crops: torch.Tensor) -> dict[float, torch.Tensor]:
    """y of every trained lambda for every crop (the frozen analysis transform)."""
    return {
        lam: torch.cat([model.analysis(batch, lam) for batch in crops.split(64)])
        for lam in model.config.lambdas
    }


def bits_per_pixel(bottleneck: EntropyBottleneck, y: torch.Tensor) -> torch.Tensor:
    """The bottleneck's bits for y (noise in training mode) per pixel of the crops."""
    _, likelihoods = bottleneck(y)
    pixels = y.shape[0] * y.shape[-2] * y.shape[-1] * 256  # 16 x 16 pixels per latent
    return -torch.log2(likelihoods).sum() / pixels


def fit(
    bottlenecks: list[EntropyBottleneck],
    assignment: dict[float, int],
    latents: dict[float, torch.Tensor],
    steps: int,
    batch: int,
    seed: int,
) -> dict[float, float]:
    """Fit ``bottlenecks`` (lambda -> index by ``assignment``) on the latents; returns the
    last quarter's mean training bpp per lambda."""
    params = [p for b in bottlenecks for n, p in b.named_parameters() if n != "quantiles"]
    quantiles = [b.quantiles for b in bottlenecks]
    main = torch.optim.Adam(params, lr=1e-3)
    aux = torch.optim.Adam(quantiles, lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    count = next(iter(latents.values())).shape[0]
    late: dict[float, list[float]] = {lam: [] for lam in latents}
    for b in bottlenecks:
        b.train()
    for step in range(steps):
        if step == steps * 3 // 4:
            for group in main.param_groups:
                group["lr"] = 1e-4
        pick = torch.randint(count, (batch,), generator=generator)
        total = torch.zeros(())
        for lam, y in latents.items():
            bpp = bits_per_pixel(bottlenecks[assignment[lam]], y[pick])
            total = total + bpp
            if step >= steps * 3 // 4:
                late[lam].append(float(bpp.detach()))
        main.zero_grad()
        total.backward()
        main.step()
        aux_loss = torch.stack([b.loss() for b in bottlenecks]).sum()
        aux.zero_grad()
        aux_loss.backward()
        aux.step()
    return {lam: float(np.mean(values)) for lam, values in late.items()}


def write(
    source: dict[str, Any],
    model: MaeNetwork,
    bottlenecks: list[EntropyBottleneck],
    shared: bool,
    note: dict[str, Any],
    path: Path,
) -> None:
    """A bench-mae-1 checkpoint: ``source``'s transforms with these bottlenecks (their
    coding tables unbuilt, as a trained checkpoint's: the codec builds them on loading)."""
    config = MaeConfig.from_dict({**source["config"], "shared_entropy_model": shared})
    refit = MaeNetwork(config)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("entropy.")}
    for index, bottleneck in enumerate(bottlenecks):
        state.update({f"entropy.{index}.{k}": v for k, v in bottleneck.state_dict().items()})
    refit.load_state_dict(state, strict=True)
    out = {k: v for k, v in source.items() if k not in ("model", "optimizers", "scaler")}
    out["config"] = config.to_dict()
    out["model"] = refit.state_dict()
    out["training"] = {**copy.deepcopy(source.get("training", {})), "entropy_refit": note}
    torch.save(out, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a mae checkpoint, one bottleneck per λ")
    parser.add_argument("--data-dir", type=Path, required=True, help="the training images")
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--crops", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    source = read_mae_checkpoint(args.checkpoint)
    config, model = load_mae_checkpoint(args.checkpoint)
    if not config.modulated or config.shared_entropy_model:
        raise SystemExit(f"{args.checkpoint}: needs a modulated model with one bottleneck per λ")
    model.requires_grad_(False)
    started = time.perf_counter()
    latents = latents_of(model, crops_of(args.data_dir, args.crops, args.seed))
    print(f"latents of {args.crops} crops x {len(latents)} λ in "
          f"{time.perf_counter() - started:.0f} s")  # fmt: skip
    digest = hashlib.sha256(args.checkpoint.read_bytes()).hexdigest()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    lambdas = list(config.lambdas)
    with torch.no_grad():  # the checkpoint's own densities on the same crops, for reference
        own = {lam: float(bits_per_pixel(model.bottleneck(lam).train(), y))
               for lam, y in latents.items()}  # fmt: skip
    print("trained densities: bpp " + "  ".join(f"λ={k:g}: {v:.4f}" for k, v in own.items()))
    runs = {"per-lambda": {lam: i for i, lam in enumerate(lambdas)},
            "shared": dict.fromkeys(lambdas, 0)}  # fmt: skip
    for name, assignment in runs.items():
        started = time.perf_counter()
        torch.manual_seed(args.seed)
        bottlenecks = [EntropyBottleneck(config.n) for _ in set(assignment.values())]
        late = fit(bottlenecks, assignment, latents, args.steps, args.batch_size, args.seed)
        note = {"from": str(args.checkpoint), "from_sha256": digest, "what": name,
                "steps": args.steps, "batch_size": args.batch_size, "crops": args.crops,
                "seed": args.seed, "transform": "frozen"}  # fmt: skip
        path = args.out_dir / f"{name}.pt"
        write(source, model, bottlenecks, name == "shared", note, path)
        cells = "  ".join(f"λ={lam:g}: {bpp:.4f}" for lam, bpp in late.items())
        print(f"{name}: {time.perf_counter() - started:.0f} s; training bpp (last quarter) "
              f"{cells} -> {path}")  # fmt: skip


if __name__ == "__main__":
    main()
