"""Heat maps of an image: where a classifier or a saliency model says the content is.

``sources`` names them (``saliency``, ``gradcam-espnetv2``, ``gradcam-vgg16@WEIGHTS``) and
caches one per process; ``gradcam`` is Grad-CAM on any torch network. Codecs receive a heat
map through the ``heatmap:NAME`` codec input (``bench.codecs.inputs``), which also gives the
``psnr-roi`` metric its region; ``gdae``'s residual compensation is their first user.
"""
