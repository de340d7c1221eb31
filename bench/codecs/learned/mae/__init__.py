"""The variable-rate modulated autoencoder (``mae``) of Yang et al. (2020), as re-implemented
in a student report (Zheng & Liang), with its single-rate baseline (Ballé et al. 2017).

The base network is Ballé 2017's factorized-prior autoencoder: three analysis stages
(conv 9x9/4, 5x5/2, 5x5/2 without bias, each followed by GDN) down to N x H/16 x W/16, and
three synthesis stages (IGDN, then transposed convs 5x5/2, 5x5/2, 9x9/4). Six small networks
(``lambda/lambda_max -> hidden -> N -> exp``) scale each analysis conv's output (modulation)
and each synthesis IGDN's output (demodulation) channel-wise, so one set of weights codes at
every trained lambda. A fresh model's scales are exp(0) = 1: it starts as the plain
autoencoder. The latent is entropy-coded for real with CompressAI's ``EntropyBottleneck``:
one per trained lambda (the authors' code), or one shared by all lambda
(``--shared-entropy-model``), which also codes lambda values between the trained ones at some
cost in rate. The rate point is lambda (``--rates mae=64,256,1024,4096``); the loss is
``sum over lambda of (bpp + lambda * MSE)`` with MSE on [0, 1], every lambda on the same
batch. ``bench train mae --single-lambda L`` trains the single-rate baseline: the same network
without modulation, one entropy model, one checkpoint per lambda.

Bitstream (big-endian)::

    "BMAE" | version u8 | model identity 8 bytes | height u32 | width u32 |
    padding top, bottom, left, right u16 x 4 | entropy-model index u8 | lambda f32 |
    latent rows u16, cols u16 | the EntropyBottleneck's string

Modules: ``model`` (``MaeConfig``, ``MaeNetwork``), ``bitstream``, ``checkpoint``
(``bench-mae-1`` files), ``codec`` (``MaeCodec``), ``train`` (``MaeTrainable``, ``bench train
mae``). The registries name them by string, so importing this package imports nothing else.
"""
