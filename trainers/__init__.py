"""The PyTorch side of sweeper: a GPT, its parameterizations, and `trainers.train.train(config, report)`.

Importable and runnable without Ray. This package's `__init__` imports nothing heavy, so that
`trainers.config` can be used (e.g. to validate a study) without importing torch.
"""
