"""Answers each TCP connection with one line (stdlib sockets only: quick to start under TCG)."""
import os
import socket
import sys

if sys.argv[1] == "--check":
    with socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=2) as conn:
        sys.exit(0 if conn.recv(100).startswith(b"db says:") else 1)
server = socket.create_server(("0.0.0.0", int(sys.argv[1])), reuse_port=True)
print("db listening on", sys.argv[1], flush=True)
line = f"db says: {os.environ.get('GREETING', 'hi')}\n".encode()
while True:
    conn, peer = server.accept()
    with conn:
        conn.sendall(line)
    print("answered", peer[0], flush=True)
