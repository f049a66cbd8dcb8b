// Unit tests of the backend helper (../index.mjs) against a fake backend
// endpoint; with DATABASE_URL also against PostgreSQL (node-postgres).
// Run by backend_test.go; by hand: node --test wsapi/client/backend/test/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { createBackend, currentSnapshot, subscribeRequested, SnorkyError } from '../index.mjs';

// fakeBackend answers each POST with reply(params) (an RPC message) and
// records the requests.
async function fakeBackend(t) {
  const fake = { requests: [], status: 200, reply: () => ({ type: 'response', data: 'tok' }) };
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      const env = JSON.parse(body);
      fake.requests.push({ headers: req.headers, body: env });
      res.writeHead(fake.status, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ service: env.service, message: fake.reply(env.message.params) }));
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => server.close());
  fake.url = `http://127.0.0.1:${server.address().port}/backend`;
  fake.backend = createBackend({ url: fake.url, apiKey: 'k3y' });
  fake.last = () => fake.requests.at(-1);
  return fake;
}

test('authorizeSubscription sends the envelope without callId', async (t) => {
  const f = await fakeBackend(t);
  assert.equal(await f.backend.authorizeSubscription([{ dealer: 'AllTasks' }]), 'tok');
  assert.deepEqual(f.last().body, {
    service: 'datasync_backend',
    message: { command: 'authorizeSubscription', params: { items: [{ dealer: 'AllTasks', query: null }] } },
  });
  assert.equal(f.last().headers['x-backend-key'], 'k3y');
  assert.equal(f.last().headers['content-type'], 'application/json');
  await f.backend.authorizeSubscription([], { snapshot: '10:12:11' });
  assert.deepEqual(f.last().body.message.params, { items: [], snapshot: '10:12:11' });
});

test('authorizeSubscription with a client passes its snapshot', async (t) => {
  const f = await fakeBackend(t);
  const client = (isolation) => ({
    query: async () => ({ rows: [{ snapshot: '5:9:7', isolation }] }),
  });
  await f.backend.authorizeSubscription([{ dealer: 'D', query: 3 }], { client: client('repeatable read') });
  assert.deepEqual(f.last().body.message.params, { items: [{ dealer: 'D', query: 3 }], snapshot: '5:9:7' });
  const n = f.requests.length;
  await assert.rejects(f.backend.authorizeSubscription([{ dealer: 'D' }], { client: client('read committed') }),
    /the transaction is READ COMMITTED: .*REPEATABLE READ/);
  assert.equal(f.requests.length, n, 'the server was called for a READ COMMITTED transaction');
});

test('publish, publishDeltas and identities', async (t) => {
  const f = await fakeBackend(t);
  f.reply = (p) => ({ type: 'response', data: 'identity' in p ? (p.ttl ? 'id-tok' : 2) : null });
  await f.backend.publish({ room: 1 }, 'hi');
  assert.deepEqual(f.last().body, { service: 'pubsub_backend', message: { command: 'publish', params: { channel: { room: 1 }, message: 'hi' } } });
  const deltas = [{ type: 'insert', model: 'Task', data: { id: 1 } }];
  assert.equal(await f.backend.publishDeltas(deltas), undefined);
  assert.deepEqual(f.last().body, { service: 'datasync_backend', message: { command: 'publishDeltas', params: { deltas } } });
  assert.equal(await f.backend.authorizeIdentity('alice', { ttl: 60 }), 'id-tok');
  assert.deepEqual(f.last().body, { service: 'identity_backend', message: { command: 'authorizeIdentity', params: { identity: 'alice', ttl: 60 } } });
  assert.equal(await f.backend.disconnectIdentity('alice'), 2);
  await assert.rejects(f.backend.authorizeIdentity(null), /identity must not be null/);
});

test('service names are configurable', async (t) => {
  const f = await fakeBackend(t);
  const b = createBackend({ url: f.url, apiKey: 'k3y', services: { datasync: 'ds' } });
  await b.authorizeSubscription([]);
  assert.equal(f.last().body.service, 'ds');
});

test('errors', async (t) => {
  const f = await fakeBackend(t);
  f.reply = () => ({ type: 'error', callId: null, message: 'No such dealer' });
  await assert.rejects(f.backend.authorizeSubscription([{ dealer: 'X' }]), (e) =>
    e instanceof SnorkyError && e.message === 'No such dealer' && e.reply === true);
  f.reply = () => ({ type: 'response', data: 5 });
  await assert.rejects(f.backend.authorizeSubscription([]), /the token is not a string: 5/);
  f.reply = () => ({});
  await assert.rejects(f.backend.publish('c', 1), /unexpected reply/);
  f.status = 401;
  await assert.rejects(f.backend.publish('c', 1), (e) => e.status === 401 && /HTTP 401 \(the API key differs/.test(e.message));
  const gone = createBackend({ url: 'http://127.0.0.1:9/backend', apiKey: 'k' });
  await assert.rejects(gone.publish('c', 1), /pubsub_backend.publish: cannot reach/);
  assert.throws(() => createBackend({ url: 'ws://x/backend', apiKey: 'k' }), /url must be the backend endpoint/);
  assert.throws(() => createBackend({ url: 'http://x/backend' }), /apiKey is required/);
});

test('subscribeRequested', () => {
  assert.equal(subscribeRequested({ headers: { 'x-snorky': ' Subscribe ' } }), true);
  assert.equal(subscribeRequested({ headers: {} }), false);
  assert.equal(subscribeRequested({ get: (h) => (h === 'X-Snorky' ? 'SUBSCRIBE' : undefined) }), true);
  assert.equal(subscribeRequested({ get: () => 'no' }), false);
});

test('subscribeQuery and currentSnapshot on PostgreSQL', { skip: !process.env.DATABASE_URL && 'DATABASE_URL not set' }, async (t) => {
  const { default: pg } = await import('pg');
  const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 2 });
  t.after(() => pool.end());
  const f = await fakeBackend(t);
  const { result, token } = await f.backend.subscribeQuery(pool, [{ dealer: 'D' }], async (c) => (await c.query('SELECT 1 AS one')).rows);
  assert.deepEqual(result, [{ one: 1 }]);
  assert.equal(token, 'tok');
  assert.match(f.last().body.message.params.snapshot, /^\d+:\d+:[\d,]*$/);

  f.reply = (p) => (p.snapshot ? { type: 'error', callId: null, message: 'Snapshot too old' } : { type: 'response', data: 'plain' });
  const fallback = await f.backend.subscribeQuery(pool, [{ dealer: 'D' }], async (c) => (await c.query('SELECT 2 AS two')).rows);
  assert.deepEqual(fallback, { result: [{ two: 2 }], token: 'plain' });

  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await assert.rejects(currentSnapshot(client), /READ COMMITTED/);
    await client.query('ROLLBACK');
  } finally {
    client.release();
  }
});
