"""Training: datasets, PyTorch models, the training loop and versioned checkpoints with lineage.

Needs the `train` extra (torch); nothing in `server/` imports this package.
"""
