// The web application of the browser tests: serves the test pages, the
// npm packages the pages load (sockjs-client, jQuery), and a list view
// that hands out subscription tokens as the original Snorky's DRF mixin
// did (X-Snorky: Subscribe → X-Subscription-Token), with snapshot handoff.
// The pages load /snorky.js from the Snorky server itself (another origin).
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));
const modules = join(here, '..', '..', 'node_modules');

const files = {
  '/sockjs.min.js': join(modules, 'sockjs-client', 'dist', 'sockjs.min.js'),
  '/jquery.min.js': join(modules, 'jquery', 'dist', 'jquery.min.js'),
};

export function startApp(server) {
  const srv = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://x');
    try {
      if (url.pathname === '/config.js') {
        res.writeHead(200, { 'Content-Type': 'text/javascript' });
        res.end(`window.TEST = ${JSON.stringify({ front: server.front, ws: server.ws, sockjs: server.sockjs })};\n`);
        return;
      }
      if (url.pathname === '/api/items') {
        if ((req.headers['x-snorky'] || '').toLowerCase() === 'subscribe') {
          const { items, token } = await server.load();
          res.writeHead(200, { 'Content-Type': 'application/json', 'X-Subscription-Token': token });
          res.end(JSON.stringify(items));
        } else {
          res.writeHead(200, { 'Content-Type': 'application/json' });
          res.end(JSON.stringify(server.rows()));
        }
        return;
      }
      if (files[url.pathname]) {
        res.writeHead(200, { 'Content-Type': 'text/javascript' });
        res.end(readFileSync(files[url.pathname]));
        return;
      }
      const m = /^\/([a-z-]+\.(html|js))$/.exec(url.pathname);
      if (m) {
        res.writeHead(200, { 'Content-Type': m[2] === 'html' ? 'text/html; charset=utf-8' : 'text/javascript' });
        res.end(readFileSync(join(here, 'pages', m[1])));
        return;
      }
      res.writeHead(404);
      res.end('not found');
    } catch (e) {
      res.writeHead(502, { 'Content-Type': 'text/plain' });
      res.end(String(e && e.message));
    }
  });
  return new Promise((resolve) => {
    srv.listen(0, '127.0.0.1', () => {
      resolve({ url: `http://127.0.0.1:${srv.address().port}`, close: () => new Promise((r) => srv.close(r)) });
    });
  });
}
