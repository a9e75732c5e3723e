"""The typed model of cove.toml, its loader and its JSON schema."""

from cove.spec.load import load_spec, resolve_spec_path
from cove.spec.model import Port, Restart, Service, Spec

__all__ = ["Port", "Restart", "Service", "Spec", "load_spec", "resolve_spec_path"]
