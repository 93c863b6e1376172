"""Names the CLI tests share."""

TINY_MODEL = "small-cnn-w16"  # the smallest built-in model (SmallCNN, width 16)
