"""Owning running VMs: one asyncio Machine per VM."""
