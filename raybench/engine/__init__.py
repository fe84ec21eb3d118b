"""Training: ``loop`` (pure PyTorch), ``run`` (one in-process training), ``worker`` (the Ray Train
worker), ``trial`` (one Tune trial's ``TorchTrainer``)."""
