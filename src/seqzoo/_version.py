"""The package version, in a leaf module so any tier (and pyproject.toml) can read it without importing seqzoo."""

__version__ = "0.1.0"
