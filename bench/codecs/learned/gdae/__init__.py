"""GDAE, the GAN-based dense autoencoder of Wang et al. ("Adaptive Image Compression Method
Using GAN based Semantic-Perceptual Residual Compensation", ICPR 2020 slides), as
``../shared/specs/gan-dense-autoencoder-gradcam.md`` reconstructs it (the slides keep no layer
list: the architecture is the spec's CHOICE).

An encoder (conv, three stride-2 stages each with a dense residual block, strip pooling, conv
to C = 16 maps) maps a [0, 1] image, edge-padded to a multiple of 8, to a latent at 1/8
resolution; a quantiser rounds it to one of L = 8 fixed centres (the GAN codec's soft-to-hard
``Quantizer``, centres ``linspace(-3.5, 3.5, 8)``); the level indices are coded losslessly
(JPEG XL lossless in place of the slides' FLIF, or rANS under a static per-map model); a
decoder (strip pooling, three dense residual blocks each followed by a stride-2 transposed
convolution) rebuilds the image. It is trained as a GAN's generator against an unconditional
70x70 PatchGAN: ``10 MSE + 2 (1 - SSIM)`` first, then ``+ 5 (-log D(x_hat))``. There is no
rate term: C, L and the lossless coder set the rate (raw C * 3 / 64 = 0.75 bpp for C = 16).

The bitstream carries an optional residual payload for semantic residual compensation (SPRC),
which is opaque here (``GdaeCodec._residual_payload`` and ``_apply_residual`` are its
extension points; without it the payload is empty).

Modules: ``model`` (``GdaeConfig`` and the networks), ``coder`` (the latent's lossless
coders), ``bitstream`` (header and payloads), ``checkpoint`` (``bench-gdae-1`` files),
``codec`` (``GdaeCodec``), ``train`` (``GdaeTrainable`` and ``bench train gdae``). The
registries name them by string, so importing this package imports nothing else.
"""
