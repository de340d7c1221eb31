"""Fine-tuning a segmenter on a codec's reconstructions (``bench train segmenter``).

A segmentation network trained on uncoded images loses accuracy on low-rate reconstructions;
fine-tuning it on reconstructions of the codec that will feed it wins much of that back
(Löhdefink et al., the GAN vs JPEG 2000 automotive segmentation paper, Tables I and II). This
package sits above both the segmenters (``bench.tasks``) and the codecs (``bench.codecs``),
which it combines:

- ``data``: ``SegmentationSampler``, the training images coded once through the real codec
  (encode, bytes, decode) and kept in memory, resized to the segmenter's input size, cut into
  seeded crops whose label maps follow the same window and flip; ``Schedule`` picks original
  or reconstructed images per sample.
- ``train``: ``SegmenterTrainable`` (cross-entropy on Cityscapes trainIds, Adam, BatchNorm
  statistics frozen) and ``SegmenterTraining``, the options of ``bench train segmenter``.
"""

from __future__ import annotations
