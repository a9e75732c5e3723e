"""Where a root image's files come from."""
