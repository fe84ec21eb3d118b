"""Training: ``loop`` (pure PyTorch), ``run`` (one in-process training), Ray layers later."""
