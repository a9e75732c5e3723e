"""Nix stores: checking and repairing the store database against what is on disk."""
