"""The daemon: its server, HTTP API routes, autostart and systemd units."""
