"""The one client of the daemon: HTTP calls, the exec WebSocket, the on-demand start."""
