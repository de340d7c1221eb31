"""Training the models a task runs on a codec's output; these need both the codecs and the
tasks, so they sit above them (in the running stage).

- ``segmenter`` and ``segmenter_data``: ``bench train segmenter``, a segmenter fine-tuned on a
  codec's reconstructions (Löhdefink et al., the GAN vs JPEG 2000 automotive segmentation
  paper, Tables I and II). ``SegmentationSampler`` codes the training images once through the
  real codec (encode, bytes, decode), keeps them in memory at the segmenter's input size and
  cuts seeded crops whose label maps follow the same window and flip; the schedule picks
  original or reconstructed images per sample. ``SegmenterTrainable``: cross-entropy on
  Cityscapes trainIds, Adam, BatchNorm statistics frozen.
- ``latent``: ``bench train segmentation-latent``, the transform layer (and segmenter) of
  ``--task segmentation-latent`` on latents of real bitstreams (the TIC paper, section III.B).
"""
