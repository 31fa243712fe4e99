"""Adversarial training methods, one module each."""
