"""sweeper: hyperparameter-transfer sweeps for GPT-style models."""

__version__ = "0.1.0"
