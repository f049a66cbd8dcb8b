// Runs the real Snorky server for the integration and browser tests. The
// Go test in wsapi/client (TestNodeIntegration, TestBrowser) builds the
// binary and makes a throwaway database, then runs these tests with:
//   CLIENT_TEST_SNORKY        the snorky binary
//   CLIENT_TEST_DATABASE_URL  a fresh database (a superuser: replication)
//   CLIENT_TEST_PSQL          psql
// By hand: go build -o /tmp/snorky ./cmd/snorky, createdb, then set those.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { stableStringify } from '../../snorky.mjs';

export const env = {
  bin: process.env.CLIENT_TEST_SNORKY,
  db: process.env.CLIENT_TEST_DATABASE_URL,
  psql: process.env.CLIENT_TEST_PSQL || 'psql',
};
export const skip = !env.bin || !env.db ? 'CLIENT_TEST_SNORKY and CLIENT_TEST_DATABASE_URL are not set (run go test ./wsapi/client)' : false;

export const apiKey = 'client-test-backend-key-0123456789abcdef';

export function sql(statement) {
  // From standard input, so that psql prints the result of every statement.
  return execFileSync(env.psql, [env.db, '-X', '-q', '-t', '-A', '-v', 'ON_ERROR_STOP=1', '-f', '-'], { encoding: 'utf8', input: statement }).trim();
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// eventually polls fn until it returns a truthy value, for at most timeout ms.
export async function eventually(fn, { timeout = 20000, what = 'condition' } = {}) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}: last ${last instanceof Error ? last.message : JSON.stringify(last)}`);
    await sleep(50);
  }
}

// Server is one snorky serve process with fixed ports, so that clients
// find it again after a restart.
export class Server {
  constructor({ table = 'items', extraYAML = '', historyMaxAge = '2m', acquireTimeout = '120s' } = {}) {
    this.table = table;
    this.extraYAML = extraYAML;
    this.historyMaxAge = historyMaxAge;
    this.acquireTimeout = acquireTimeout;
    this.suffix = randomBytes(4).toString('hex');
    this.slot = 'client_' + this.suffix;
    this.dir = mkdtempSync(join(tmpdir(), 'snorky-client-'));
    this.proc = null;
    this.log = [];
  }

  async init() {
    this.frontPort = await freePort();
    this.backPort = await freePort();
    this.front = `http://127.0.0.1:${this.frontPort}`;
    this.ws = `ws://127.0.0.1:${this.frontPort}/ws`;
    this.sockjs = `http://127.0.0.1:${this.frontPort}/sockjs`;
    this.backend = `http://127.0.0.1:${this.backPort}/backend`;
    sql(`CREATE TABLE IF NOT EXISTS ${this.table} (id bigserial PRIMARY KEY, title text NOT NULL, n int NOT NULL DEFAULT 0)`);
    this.config = join(this.dir, 'snorky.yaml');
    writeFileSync(this.config, `frontend:
  listen: "127.0.0.1:${this.frontPort}"
  path: /ws
  sockjs_path: /sockjs
  allowed_origins: ["*"]
backend:
  listen: "127.0.0.1:${this.backPort}"
  path: /backend
  api_key: "${apiKey}"
tokens:
  secret: "client-test-secret-0123456789abcdef"
  acquire_timeout: ${this.acquireTimeout}
database:
  url: "${env.db}"
  slot: ${this.slot}
  publication: ${this.slot}
  migrate: true
  history: {max_age: ${this.historyMaxAge}}
models:
  Item: {table: public.${this.table}}
dealers:
  AllItems: {model: Item, kind: broadcast}
limits:
  commands_per_second: 0
log: {level: warn}
shutdown: {timeout: 5s}
${this.extraYAML}`);
    return this;
  }

  async start() {
    const proc = spawn(env.bin, ['serve', '--config', this.config], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = proc;
    const keep = (b) => {
      this.log.push(b.toString());
      if (this.log.length > 200) this.log.shift();
    };
    proc.stdout.on('data', keep);
    proc.stderr.on('data', keep);
    this.exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
    await eventually(async () => {
      if (proc.exitCode !== null) throw new Error('snorky exited: ' + this.log.join(''));
      const r = await fetch(`http://127.0.0.1:${this.backPort}/readyz`);
      return r.status === 200;
    }, { what: 'the server to be ready' });
    return this;
  }

  // stop ends the server: SIGTERM (graceful, clients get 1001) or SIGKILL.
  async stop(signal = 'SIGTERM') {
    if (!this.proc || this.proc.exitCode !== null) return;
    this.proc.kill(signal);
    await this.exited;
    this.proc = null;
  }

  async restart(signal = 'SIGKILL') {
    await this.stop(signal);
    await this.start();
  }

  async call(service, command, params) {
    const r = await fetch(this.backend, {
      method: 'POST',
      headers: { 'X-Backend-Key': apiKey, 'Content-Type': 'application/json' },
      body: JSON.stringify({ service, message: { command, params } }),
    });
    const body = await r.json();
    if (r.status !== 200) throw new Error(`backend ${command}: ${r.status} ${JSON.stringify(body)}`);
    if (body.message.type === 'error') throw new Error(body.message.message);
    return body.message.data;
  }

  // load is an app's list view with snapshot handoff (D8): the rows and a
  // token for exactly the changes after them.
  load() {
    const out = sql(`BEGIN ISOLATION LEVEL REPEATABLE READ;
      SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY id), '[]') FROM ${this.table} t;
      SELECT pg_current_snapshot();
      COMMIT;`).split('\n').filter(Boolean);
    const items = JSON.parse(out[0]);
    return this.call('datasync_backend', 'authorizeSubscription', { items: [{ dealer: 'AllItems', query: null }], snapshot: out[1] })
      .then((token) => ({ items, token }));
  }

  rows() {
    return JSON.parse(sql(`SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY id), '[]') FROM ${this.table} t`));
  }

  async close() {
    await this.stop('SIGTERM');
    try {
      sql(`SELECT pg_drop_replication_slot('${this.slot}') FROM pg_replication_slots WHERE slot_name = '${this.slot}'`);
      sql(`DROP PUBLICATION IF EXISTS ${this.slot}`);
      sql(`DROP TABLE IF EXISTS ${this.table}`);
    } catch (e) {
      // the database is dropped by the Go test anyway
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

// byId returns the JSON text of items sorted by id, keys sorted: equal
// rows give equal text whatever the order of their keys.
export function byId(items) {
  return stableStringify([...items].sort((a, b) => a.id - b.id));
}
