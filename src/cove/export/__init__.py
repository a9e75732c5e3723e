"""Specs and stacks for other engines: OCI image archives, Kubernetes manifests."""
