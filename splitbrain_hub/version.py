"""The package version, read by setup.cfg and reported by the CLI and the service."""
__version__ = '0.1.0'
