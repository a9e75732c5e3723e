"""What the CLI and the Python API share between a spec and a started VM or stack."""
