"""A minimal HTTP server whose answer comes from db:5432 (stdlib sockets only)."""
import socket
import sys

server = socket.create_server(("0.0.0.0", int(sys.argv[1])), reuse_port=True)
print("web listening on", sys.argv[1], flush=True)
while True:
    conn, _ = server.accept()
    with conn:
        conn.recv(4096)
        try:
            with socket.create_connection(("db", 5432), timeout=3) as db:
                body = b"web got: " + db.recv(200)
            status = b"200 OK"
        except OSError as error:
            body, status = f"db unreachable: {error}\n".encode(), b"502 Bad Gateway"
        conn.sendall(b"HTTP/1.0 " + status + b"\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body)
