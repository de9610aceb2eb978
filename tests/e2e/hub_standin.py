"""A local HTTP server that STANDS IN FOR THE HUGGING FACE HUB in tests (the real Hub cannot be reached from
here). It serves fixture repositories on the Hub's URL layout and with its status codes:

    GET  /api/models/{org}/{name}[?blobs=true]      metadata: sha, gated, siblings with size, blobId, lfs.sha256
    HEAD /{org}/{name}/resolve/{revision}/{file}      access check (401 without token, 403 with a wrong one)
    GET  /{org}/{name}/resolve/{revision}/{file}      the file, honouring `Range: bytes=N-` with 206

Knobs for failure cases: `cut_after[file] = n` sends the full Content-Length, then only n bytes, then drops
the connection (once); `outage` answers every request 503 and closes (the Hub is down); `corrupt` files are served with one byte flipped while the metadata lists the true
checksum; `throttle` slows downloads (bytes per second) so progress can be watched. Every request is
recorded (method, path, Authorization, Range) for the tests to inspect.
"""
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Repo:
    def __init__(self, files, gated=False, tokens=(), corrupt=()):
        self.files = dict(files)          # name -> bytes
        self.gated = gated
        self.tokens = set(tokens)         # tokens that may read a gated repo
        self.corrupt = set(corrupt)
        self.sha = hashlib.sha1(b"".join(hashlib.sha256(v).digest() for v in self.files.values())).hexdigest()

    def siblings(self):
        out = []
        for name, data in sorted(self.files.items()):
            entry = {"rfilename": name, "size": len(data),
                     "blobId": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()}
            if name.endswith((".gguf", ".safetensors", ".bin")):
                entry["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            out.append(entry)
        return out


class HubStandIn:
    def __init__(self, repos, host="127.0.0.1"):
        self.repos = dict(repos)
        self.cut_after = {}
        self.throttle = None
        self.outage = False
        self.requests = []
        self.lock = threading.Lock()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                standin.handle(self, head=False)

            def do_HEAD(self):
                standin.handle(self, head=True)

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def file_requests(self, name):
        with self.lock:
            return [r for r in self.requests if r["method"] == "GET" and r["path"].endswith("/" + name)]

    # Serving

    def reply(self, h, status, body=b"", headers=None, head=False):
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head:
            h.wfile.write(body)

    def handle(self, h, head):
        auth = h.headers.get("Authorization")
        with self.lock:
            self.requests.append({"method": h.command, "path": h.path, "authorization": auth,
                                  "range": h.headers.get("Range")})
        if self.outage:
            # The Hub is down: 503 on every request, and the connection is closed.
            h.close_connection = True
            return self.reply(h, 503, b'{"error":"Service Unavailable"}', {"Connection": "close"}, head)
        path = h.path.split("?", 1)[0]
        token = auth.split(" ", 1)[1] if auth and auth.startswith("Bearer ") else None
        if path.startswith("/api/models/"):
            repo = self.repos.get(path[len("/api/models/"):])
            if repo is None:
                return self.reply(h, 401, b'{"error":"Repository not found"}', {"X-Error-Code": "RepoNotFound"}, head)
            body = json.dumps({"id": path[len("/api/models/"):], "sha": repo.sha, "private": False,
                               "gated": "manual" if repo.gated else False, "siblings": repo.siblings()}).encode()
            return self.reply(h, 200, body, {"Content-Type": "application/json"}, head)
        parts = path.lstrip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return self.reply(h, 404, b"not found", head=head)
        repo = self.repos.get("/".join(parts[:2]))
        name = "/".join(parts[4:])
        if repo is None:
            return self.reply(h, 401, b'{"error":"Repository not found"}', {"X-Error-Code": "RepoNotFound"}, head)
        if repo.gated and token is None:
            return self.reply(h, 401, b'{"error":"Access to this model is restricted. You must be authenticated."}',
                              {"X-Error-Code": "GatedRepo"}, head)
        if repo.gated and token not in repo.tokens:
            return self.reply(h, 403, b'{"error":"Access to this model is restricted and you are not in the authorized list."}',
                              {"X-Error-Code": "GatedRepo"}, head)
        if name not in repo.files:
            return self.reply(h, 404, b'{"error":"Entry not found"}', {"X-Error-Code": "EntryNotFound"}, head)
        data = repo.files[name]
        if name in repo.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        headers = {"X-Repo-Commit": repo.sha, "ETag": f'"{hashlib.sha256(repo.files[name]).hexdigest()}"',
                   "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        start = 0
        rng = h.headers.get("Range")
        if rng and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[6:-1])
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        status = 206 if start else 200
        body = data[start:]
        if head:
            return self.reply(h, status, body, headers, head=True)
        cut = self.cut_after.pop(name, None)
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if cut is not None:
            h.wfile.write(body[:cut])
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(1)  # FIN after the bytes sent: the body ends short of its Content-Length
            return
        step = 64 << 10
        for i in range(0, len(body), step):
            h.wfile.write(body[i:i + step])
            if self.throttle:
                time.sleep(step / self.throttle)
