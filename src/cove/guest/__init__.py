"""Code that runs inside the guest (standard library only, imports kept few)."""
