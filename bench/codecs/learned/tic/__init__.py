"""The TIC codecs: ``tic-hp`` (TransTIC's fixed-rate TIC_hp) and ``tic`` (one prompted model
for every rate, with regions of interest).

Both entropy-code real bitstreams with CompressAI's coders: z under the factorized
``EntropyBottleneck``, y under the ``GaussianConditional`` that the hyperprior predicts.
Images are replicate-padded at the bottom and right to multiples of 256 and cropped back;
bpp is over the original pixels. Records carry the measured bpp of the bytes and
``bpp_estimated``, the bits the model's likelihoods give for the same latents.

Bitstream (big-endian)::

    "TIC1" | variant u8 (0 tic-hp, 1 tic) | quality u8 (tic-hp 1..8, tic 0) |
    model identity 8 bytes | height u32 | width u32 | tile side u16 (0: whole image) |
    per tile: z rows u16, z cols u16, y bytes u32, z bytes u32, y string, z string

Tiles (``tile=T``, a multiple of 256) split images whose padded size exceeds
``max_megapixels``; each tile is coded alone (no context crosses a tile border, which costs
bits and, near borders, quality, as the paper notes). Without ``tile`` such images are
refused with the option to use.

The quality map of ``tic`` steers the encoder only (its prompts); the decoder has no
prompts, so neither the map nor q travels in the bitstream.

Modules: ``layers`` (Swin blocks), ``model`` (``TicConfig``, the networks, the rate-distortion
loss; torch and CompressAI), ``bitstream`` (header and tiles), ``checkpoint`` (``bench-tic-1``
files), ``codec`` (``TicHpCodec``, ``TicCodec``), ``train`` (``TicTrainable`` and ``bench train
tic``). The registries name them by string, so importing this package imports nothing else.
"""
