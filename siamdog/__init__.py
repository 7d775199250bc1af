"""siamdog: fine-grained image classification with a Siamese multi-loss model."""

__version__ = "0.1.0"
