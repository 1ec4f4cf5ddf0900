"""The PyTorch side of sweeper: a GPT, its parameterizations, and `trainers.train.train(config, report)`.

Importable and runnable without Ray. This package's `__init__` imports nothing heavy, so that
`trainers.config` can be used (e.g. to validate a study) without importing torch.
"""


def parameterize(model, base=None, **keys):
    """sweeper's parameterization rules on any PyTorch model; see `trainers.foreign.parameterize`.

    `p = parameterize(model, base=base_model, parameterization="mup", lr=3e-3)`: `p.rows` is the table
    `sweeper params --json` prints, `p.param_groups` goes to the optimizer. Imported lazily, so that
    `import trainers` stays free of torch.
    """
    from trainers.foreign import parameterize as apply

    return apply(model, base, **keys)
