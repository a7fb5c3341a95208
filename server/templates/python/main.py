"""Your cloudcode Python project.

Press Run (or type `python3 main.py` in a terminal) and open the preview:
this server answers on port 3000.
"""

import html
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ.get("PORT", "3000"))


class Hello(BaseHTTPRequestHandler):
    def do_GET(self):
        body = (
            "<!doctype html><title>Hello from cloudcode</title>"
            "<h1>Hello from cloudcode</h1>"
            "<p>Edit <code>main.py</code> and run it again to see your change.</p>"
            f"<p>Requested: <code>{html.escape(self.path)}</code></p>"
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "text/html; charset=utf-8")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


if __name__ == "__main__":
    print(f"Listening on http://localhost:{PORT}", flush=True)
    ThreadingHTTPServer(("0.0.0.0", PORT), Hello).serve_forever()
