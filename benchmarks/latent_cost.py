"""Cost of segmenting from TIC's latent against decoding it, next to the TIC paper's Table 1.

    OMP_NUM_THREADS=1 python benchmarks/latent_cost.py [--height 512 --width 1024]

For an image of the given size (the paper's Table 1: 512 x 1024), with random weights (costs do
not depend on them), prints parameters and multiply-accumulates (``torch.utils.flop_counter``
totals over 2, which is what the paper calls FLOPs) of:

* the paper's transform layer (1x1 convolution 192 -> 1,536, pixel shuffle 4: Swin-T's 96
  channels at H/4);
* bench's transform layer into ESPNetv2 s=2 after its stem (192 -> 35 * 16, shuffle 4 at
  Cityscapes' 2048 x 1024; the column is for the same 32 x 64 latent);
* TIC's synthesis transform g_s at the paper's size (N=128, M=192) and at ``bench train
  tic``'s ``tiny`` size (N=32, M=48);

and the median seconds of one forward pass of each on this machine (``--repeat`` passes).
Run by hand; the figures go in the notes and the README, never in a timed test.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from bench.codecs.learned.tic.model import SIZES, TicConfig, build_model, scaled_heads
from bench.tasks.latent import count_macs, parameter_count, transform_layer

PAPER_TABLE_1 = {
    "transform layer (paper)": (0.2964e6, 0.6039e9),
    "TIC image decoder (paper)": (2.184e6, 97.064e9),
}
"""The TIC paper's Table 1 at 512 x 1024: (parameters, "GFLOPs" as printed)."""


def seconds(module: Any, x: torch.Tensor, repeat: int) -> float:
    times = []
    with torch.inference_mode():
        for _ in range(repeat):
            began = time.perf_counter()
            module(x)
            times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    h, w = args.height // 16, args.width // 16
    rows: list[tuple[str, Any, torch.Tensor]] = [
        (f"transform layer {m}->{c}, shuffle 4 ({what})", transform_layer(m, c, 4),
         torch.zeros(1, m, h, w))
        for m, c, what in ((192, 96, "paper"), (192, 35, "ESPNetv2"),
                           (48, 35, "ESPNetv2, tiny tic"))
    ]  # fmt: skip
    for size in ("paper", "tiny"):
        n, m, prompt = SIZES[size]
        heads = scaled_heads(n) if size != "paper" else TicConfig().heads
        config = TicConfig(n=n, m=m, prompt_channels=prompt, size=size, heads=heads)
        model = build_model(config).eval()
        synthesis = torch.nn.ModuleList(
            module for name, module in model.named_children() if name.startswith("g_s")
        )
        rows.append((f"TIC synthesis g_s, {size} (N={n}, M={m})", (model.g_s, synthesis),
                     torch.randn(1, m, h, w)))  # fmt: skip
    print(f"image {args.width}x{args.height}, latent {w}x{h}")
    print(f"{'':58s} {'params':>12s} {'GMAC':>10s} {'s/pass':>8s}")
    for name, module, x in rows:
        run, owner = module if isinstance(module, tuple) else (module, module)
        macs = count_macs(run, x)
        print(f"{name:58s} {parameter_count(owner):12,d} {macs / 1e9:10.4f} "
              f"{seconds(run, x, args.repeat):8.3f}")  # fmt: skip
    for name, (params, flops) in PAPER_TABLE_1.items():
        print(f"{name:58s} {int(params):12,d} {flops / 1e9:10.4f} {'':>8s}")


if __name__ == "__main__":
    main()
