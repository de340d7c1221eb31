"""GDAE: a GAN dense autoencoder with semantic-perceptual residual compensation (SPRC)."""
