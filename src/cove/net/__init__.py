"""Networks and forwards: cove networks (bridges), stack segments, port forwards."""
