// Your cloudcode Node.js project. Press Run (or type `node index.js` in a
// terminal) and open the preview: this server answers on port 3000.
const http = require("http");

const port = Number(process.env.PORT || 3000);

const server = http.createServer((req, res) => {
  res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
  res.end(`<!doctype html>
<title>Hello from cloudcode</title>
<h1>Hello from cloudcode</h1>
<p>Edit <code>index.js</code> and run it again to see your change.</p>
<p>Requested: <code>${req.method} ${req.url}</code></p>`);
});

server.listen(port, "0.0.0.0", () => {
  console.log(`Listening on http://localhost:${port}`);
});
