"""Models: backbone registry (towers) and the Siamese / softmax-only classifiers."""
