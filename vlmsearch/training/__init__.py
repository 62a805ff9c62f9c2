"""Training fusion heads: cached tower features, the training loop, bundles."""
