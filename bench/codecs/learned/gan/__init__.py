"""The GAN autoencoder codec of Löhdefink et al. (2019), after Agustsson et al. (2018).

An encoder maps an RGB image in [-1, 1] to a latent of ``F`` maps at 1/16 of its size; each
latent value is quantized to one of ``L`` fixed centres (soft-to-hard quantization: the soft
softmax assignment of the paper's eq. 1-2 for the gradient, the nearest centre in the forward
pass); a decoder (nine residual blocks and four transposed convolutions) maps the centres back
to an image; a multi-scale PatchGAN discriminator trains it with a least-squares GAN loss, a
feature-matching loss and an MSE loss. As in the paper, each symbol costs ``ld(L)`` bits by
default, so the rate is ``F * ld(L) / 256`` bpp (paper eq. 5) plus bench's header.

Beyond the paper, ``entropy_coding=true`` codes the indices with CompressAI's rANS coder under a
static per-channel model: ``bench train gan`` counts, after training, how often each latent map
``f`` takes each level over the training images and stores the counts (F x L, int64) in the
checkpoint as ``entropy_model``; the coder uses the CDFs of ``(counts + 1) / sum`` (Laplace
smoothing: every level stays codable) quantized to 16 bits by CompressAI.

Bitstream (big-endian, 37 header bytes, then the payload)::

    4s  magic b"BGAN"             B  version (1 packed, 2 entropy-coded)     8s  model identity
    I   image height              I  image width          4H  padding top, bottom, left, right
    H   F (bottleneck maps)       H  L (levels)           2H  latent height, latent width
    version 1 payload: the F x h x w level indices in C order, first symbol most significant;
    for L a power of two, ld(L) bits each (the last byte zero-filled); otherwise one base-L
    integer of ceil(n * ld(L) / 8) bytes (a Python int, exact).
    version 2: 4s entropy-model identity (so the header is 41 bytes), then the rANS string of
    the same F x h x w indices in the same order, symbol f * h * w + i coded with map f's CDF
    (CompressAI's ``RansEncoder.encode_with_indexes``; a multiple of 4 bytes, at least 8).

The model identity is the first 8 bytes of the SHA-256 of the config JSON and the generator's
tensors, so a decoder refuses a bitstream made by another model, even one of the same F and L;
the entropy-model identity is the first 4 bytes of the SHA-256 of the counts (``EntropyTables``),
so it also refuses an entropy-coded one whose checkpoint has no or other counts.

Design choices where the paper is silent (or where its reference code is defective):

* Block 6 of the encoder is conv + instance norm *without* the ReLU the paper lists for all six
  blocks: the reference TF code puts a ReLU before symmetric centres, so the negative half of
  the levels can never be chosen. ``bottleneck_activation="relu"`` reproduces that literally
  (for comparison only).
* Centres are fixed, spacing 1, symmetric about 0: ``linspace(-(L-1)/2, (L-1)/2, L)`` (the
  reference uses the integers -2..2 for L = 5); the affine instance norm of block 6 learns the
  scale of the latent against them. They are stored in the config.
* The straight-through estimator is written ``hard + (soft - soft.detach())``: the same
  gradient as ``soft + (hard - soft).detach()``, but the forward value is exactly the centre,
  so ``decode(encode(x))`` equals ``forward(x)`` bit for bit.
* Instance norms are affine (TF's default), convolutions keep their biases; 3x3 convolutions
  zero-pad by 1; the 7x7 ones reflection-pad by 3.
* PatchGAN convolutions are 4x4 with padding 2 (pix2pixHD); the D and the adversarial losses
  are averaged over the three scales; feature matching is the L1 distance of the four
  intermediate maps (not the logits), averaged over layers and scales, the real image's maps
  detached; the MSE is taken on the [-1, 1] scale the networks work in.
* Images are padded to a multiple of 16 by edge replication, centred (as the CompressAI codecs
  centre their zero padding), and cropped back. ``width`` scales every hidden channel count,
  not ``F`` and not the 3 RGB channels.

Modules: ``config`` (``GanConfig``), ``model`` (the networks and losses; torch), ``bitstream``
(header and packed indices), ``entropy`` (rANS tables of per-map level counts),
``checkpoint`` (``bench-gan-1`` files), ``codec`` (``GanCodec``), ``train`` (``GanTrainable``
and ``bench train gan``). The registries name them by string (``bench.codecs``,
``bench.training``), so importing this package imports nothing else.
"""
