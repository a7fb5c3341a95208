"""A hostile preview app for cloudcode's security tests: it serves
index.html and attack.js from its own directory on port 3000."""

import functools
import os
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ.get("PORT", "3000"))
HERE = os.path.dirname(os.path.abspath(__file__))

if __name__ == "__main__":
    handler = functools.partial(SimpleHTTPRequestHandler, directory=HERE)
    print(f"hostile app listening on {PORT}", flush=True)
    ThreadingHTTPServer(("0.0.0.0", PORT), handler).serve_forever()
