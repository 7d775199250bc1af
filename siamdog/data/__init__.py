"""Data: organizing files, reading images, augmentation, batches and pairs."""
