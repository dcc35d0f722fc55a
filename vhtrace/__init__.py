"""vhtrace: record, inspect and replay vhost-user conversations."""

__version__ = "0.1.0"
