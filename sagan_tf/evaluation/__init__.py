"""Evaluation of generated samples: feature networks, reference statistics and FID/IS/KID/PR."""
