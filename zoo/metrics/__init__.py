"""Task metrics as pure functions (numpy in, floats out). Import submodules by full path, e.g.
``zoo.metrics.antispoof``."""
