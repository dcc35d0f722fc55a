"""vhtrace: record, inspect and replay vhost-user conversations."""

__version__ = "0.2.0"
