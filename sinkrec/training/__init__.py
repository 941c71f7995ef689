"""Training: losses, checkpoints, the trainer loop."""
