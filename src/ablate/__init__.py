"""ablate: architecture-ablation test matrices for small language models, reported honestly."""

__version__ = "0.1.0"
