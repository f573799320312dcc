"""lmstudio: a desktop playground for training and exploring small language models."""

__version__ = "0.1.0"
