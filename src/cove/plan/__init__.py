"""The plan: a pure function of a spec and the host's facts, with the hypervisor-by-feature
table, the choice of hypervisor and the accelerator."""
