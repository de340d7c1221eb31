"""The importance-map autoencoder (``impmap``) of Alexandre et al., "An Autoencoder-based
Learned Image Compressor: Description of Challenge Proposal by NCTU" (CLIC 2018), as
``../shared/specs/importance-map-autoencoder.md`` reconstructs it.

An encoder maps the image to 16 feature maps in [0, 1] at 1/8 resolution; a uniform B = 4 bit
quantiser gives integer indices 0..15; an importance network gives, per element, how many most
significant bits of its index are kept (1..B); the masked indices are coded bit plane by bit
plane (MSB first) in 4x4 blocks by a context-adaptive binary arithmetic coder; the decoder
network rebuilds the image.

Modules: ``model`` (the networks, quantisers and masking), ``coder`` (the bit-plane coder).
The registries name them by string, so importing this package imports nothing else.
"""
