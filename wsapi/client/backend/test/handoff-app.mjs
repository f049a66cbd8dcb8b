// A minimal Node web application for the handoff test (backend_test.go):
// GET /api/items lists the items table and, with X-Snorky: Subscribe,
// answers X-Subscription-Token through subscribeQuery. Environment:
// DATABASE_URL, SNORKY_BACKEND_URL, SNORKY_API_KEY, ADDR (host:port).
import { createServer } from 'node:http';
import pg from 'pg';
import { createBackend, subscribeRequested, TOKEN_HEADER } from '../index.mjs';

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 8 });
const snorky = createBackend({ url: process.env.SNORKY_BACKEND_URL, apiKey: process.env.SNORKY_API_KEY });
const LIST = 'SELECT id, v FROM items ORDER BY id';

const server = createServer(async (req, res) => {
  try {
    if (req.method !== 'GET' || req.url !== '/api/items') {
      res.writeHead(404).end();
      return;
    }
    const headers = { 'Content-Type': 'application/json' };
    let rows;
    if (subscribeRequested(req)) {
      const { result, token } = await snorky.subscribeQuery(pool, [{ dealer: 'AllItems', query: null }],
        async (client) => (await client.query(LIST)).rows);
      rows = result;
      headers[TOKEN_HEADER] = token;
    } else {
      rows = (await pool.query(LIST)).rows;
    }
    res.writeHead(200, headers).end(JSON.stringify(rows));
  } catch (e) {
    console.error(e);
    res.writeHead(502, { 'Content-Type': 'application/json' }).end(JSON.stringify({ error: String(e.message) }));
  }
});
const [host, port] = process.env.ADDR.split(':');
server.listen(Number(port), host, () => console.log(`listening on ${process.env.ADDR}`));
process.on('SIGTERM', () => { server.close(); pool.end(); });
