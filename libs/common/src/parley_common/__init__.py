"""Shared contracts and plumbing for every Parley service.

Everything that crosses a service boundary (bus subjects, event models, error codes) is defined
here once and imported by the services; no service imports another service's package.
"""

__version__ = "0.1.0"
