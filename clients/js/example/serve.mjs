// A small static file server for the example page and the library, so the page
// loads ../src and ../node_modules without a bundler or any network:
//   node example/serve.mjs [PORT] [HOST]   (defaults 8080, 127.0.0.1)
// then open http://127.0.0.1:8080/example/
import { createServer } from 'node:http';
import { readFile, stat } from 'node:fs/promises';
import { extname, join, normalize, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url)); // clients/js/
const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.mjs': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.json': 'application/json', '.svg': 'image/svg+xml', '.png': 'image/png', '.ico': 'image/x-icon' };

/** Serve clients/js on host:port (0: any free port); resolves to the server's base URL. */
export function serve(port = 8080, host = '127.0.0.1') {
  const server = createServer(async (req, res) => {
    try {
      let path = normalize(decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname));
      let file = join(ROOT, path);
      if (!file.startsWith(ROOT) || file.split(sep).some((p) => p.startsWith('.') && p.length > 1 && p !== '..')) throw new Error('forbidden');
      if ((await stat(file)).isDirectory()) file = join(file, 'index.html');
      const body = await readFile(file);
      res.writeHead(200, { 'content-type': TYPES[/** @type {keyof TYPES} */ (extname(file))] ?? 'application/octet-stream', 'cache-control': 'no-store' });
      res.end(body);
    } catch {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found');
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      const a = /** @type {import('node:net').AddressInfo} */ (server.address());
      resolve({ url: `http://${host}:${a.port}`, close: () => server.close() });
    });
  });
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const { url } = await serve(Number(process.argv[2] ?? 8080), process.argv[3] ?? '127.0.0.1');
  console.log(`example page: ${url}/example/`);
}
