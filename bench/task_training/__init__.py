"""Training what a task runs on a codec's output (it needs both codecs and tasks, so it sits
above them): ``latent`` trains the transform layer (and the segmenter) of
``--task segmentation-latent`` on latents of real bitstreams (``bench train
segmentation-latent``)."""
