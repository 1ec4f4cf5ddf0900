"""The user-facing error of both packages, in a module that imports nothing: a reader of the results store
need not build the trainer config's schema (a tenth of a second) to catch it."""


class ConfigError(ValueError):
    """A user-facing configuration error: one line naming the key, the value and what is allowed."""
