"""One VM's life: its machine, storage, agent channel, saved states and supervision."""
