"""Optional PyTorch side of onnxprune (``pip install onnxprune[torch]``): channel groups mapped
onto a module's parameters, pruning decisions learned in training, and fine-tuning."""
