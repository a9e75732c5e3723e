"""Hypervisor backends: each turns a plan into its argv/config and knows its control channel."""
