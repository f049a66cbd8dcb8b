// Snorky backend helper for Node web applications (Express-style, with
// node-postgres): the calls an application makes to the Snorky server's
// private backend endpoint (spec §4, §6), with the snapshot handoff of D8.
//
//   import { createBackend, subscribeRequested, TOKEN_HEADER } from 'snorky/backend';
//   const snorky = createBackend({ url: 'http://127.0.0.1:5002/backend', apiKey: process.env.SNORKY_API_KEY });
//
//   app.get('/api/tasks', async (req, res) => {
//     if (!subscribeRequested(req)) return res.json((await pool.query(LIST)).rows);
//     const { result, token } = await snorky.subscribeQuery(pool, [{ dealer: 'AllTasks', query: null }],
//       async (client) => (await client.query(LIST)).rows);
//     res.set(TOKEN_HEADER, token).json(result);
//   });
//
// subscribeQuery runs the query and pg_current_snapshot() in one REPEATABLE
// READ transaction and authorises with that snapshot, so the subscription
// receives exactly the changes the response did not show: none lost, none
// twice. authorizeSubscription(items, { client }) does the same inside a
// transaction of your own.
//
// Every call is one POST of a Snorky envelope with X-Backend-Key and no
// callId; it needs Node 18 or later (global fetch) and no other package.

/** The request header that asks a list view for a token, and its value. */
export const SUBSCRIBE_HEADER = 'X-Snorky';
/** The response header that carries the token. */
export const TOKEN_HEADER = 'X-Subscription-Token';

/**
 * A failed backend call. `message` is the server's error string for an
 * error reply (`reply` is then true; e.g. "Snapshot too old", "No such
 * dealer"), otherwise what failed; `status` is the HTTP status, if any.
 */
export class SnorkyError extends Error {
  constructor(message, { reply = false, status = undefined, service, command } = {}) {
    super(message);
    this.name = 'SnorkyError';
    this.reply = reply;
    this.status = status;
    this.service = service;
    this.command = command;
  }
}

/**
 * Whether an incoming request (Express, or Node's http.IncomingMessage)
 * carries `X-Snorky: Subscribe` (any case).
 */
export function subscribeRequested(req) {
  const v = typeof req.get === 'function' ? req.get(SUBSCRIBE_HEADER) : req.headers?.['x-snorky'];
  return typeof v === 'string' && v.trim().toLowerCase() === 'subscribe';
}

/**
 * pg_current_snapshot() of the open transaction of `client` (node-postgres
 * Client or PoolClient), which must be REPEATABLE READ or SERIALIZABLE so
 * that it is the snapshot its queries see.
 */
export async function currentSnapshot(client) {
  const r = await client.query(
    "SELECT pg_current_snapshot()::text AS snapshot, current_setting('transaction_isolation') AS isolation");
  const { snapshot, isolation } = r.rows[0];
  if (isolation !== 'repeatable read' && isolation !== 'serializable') {
    throw new SnorkyError(`snorky: the transaction is ${isolation.toUpperCase()}: run the query and ` +
      "authorizeSubscription in one transaction begun with 'BEGIN ISOLATION LEVEL REPEATABLE READ', " +
      'or the query may see a different snapshot');
  }
  return snapshot;
}

const FALLBACK = new Set(['Snapshot too old', 'Snapshots need a database']);

/**
 * Returns the backend client for a Snorky server.
 *
 * @param {object} options
 * @param {string} options.url the backend endpoint, e.g. http://127.0.0.1:5002/backend
 * @param {string} options.apiKey the server's backend.api_key
 * @param {{datasync?: string, pubsub?: string, identity?: string}} [options.services]
 *   backend service names (defaults datasync_backend, pubsub_backend, identity_backend)
 * @param {number} [options.timeoutMs] per call, default 10000
 * @param {typeof fetch} [options.fetch] default the global fetch
 */
export function createBackend({ url, apiKey, services = {}, timeoutMs = 10000, fetch: fetchFn = globalThis.fetch } = {}) {
  if (!url || !/^https?:\/\/[^/]/.test(url)) {
    throw new TypeError(`snorky: url must be the backend endpoint, e.g. http://127.0.0.1:5002/backend (got ${JSON.stringify(url)})`);
  }
  if (!apiKey) throw new TypeError("snorky: apiKey is required (the server's backend.api_key)");
  if (typeof fetchFn !== 'function') throw new TypeError('snorky: no fetch: use Node 18 or later, or pass options.fetch');
  const names = { datasync: 'datasync_backend', pubsub: 'pubsub_backend', identity: 'identity_backend', ...services };

  /** Sends command with params to service; resolves to the response's data. */
  async function call(service, command, params) {
    const what = `${service}.${command}`;
    let resp, text;
    try {
      resp = await fetchFn(url, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'X-Backend-Key': apiKey },
        body: JSON.stringify({ service, message: { command, params } }),
        signal: AbortSignal.timeout(timeoutMs),
      });
      text = await resp.text();
    } catch (e) {
      throw new SnorkyError(`snorky ${what}: cannot reach ${url}: ${e.cause?.message || e.message}`, { service, command });
    }
    if (resp.status < 200 || resp.status > 299) {
      const hint = resp.status === 401 ? " (the API key differs from the server's backend.api_key)" : '';
      throw new SnorkyError(`snorky ${what}: HTTP ${resp.status}${hint}: ${text.trim()}`, { status: resp.status, service, command });
    }
    let message;
    try {
      message = JSON.parse(text).message;
    } catch {
      message = undefined;
    }
    if (message?.type === 'error') {
      throw new SnorkyError(message.message, { reply: true, status: resp.status, service, command });
    }
    if (message?.type !== 'response') {
      throw new SnorkyError(`snorky ${what}: unexpected reply ${text.slice(0, 200)}`, { status: resp.status, service, command });
    }
    return message.data ?? null;
  }

  /**
   * Authorises a subscription to items ([{dealer, query}]) and resolves to
   * its token. With `client` (in an open REPEATABLE READ transaction) it
   * passes that transaction's snapshot: the subscription receives exactly
   * the changes its queries did not see. With `snapshot`, that text. With
   * neither, the original rule: call it before your query (changes in the
   * result may then arrive again).
   */
  async function authorizeSubscription(items, { client, snapshot } = {}) {
    if (!Array.isArray(items)) throw new TypeError('snorky: items must be an array of {dealer, query}');
    const params = { items: items.map(({ dealer, query = null }) => ({ dealer, query })) };
    if (client) snapshot = await currentSnapshot(client);
    if (snapshot !== undefined) params.snapshot = snapshot;
    const token = await call(names.datasync, 'authorizeSubscription', params);
    if (typeof token !== 'string' || token === '') {
      throw new SnorkyError(`snorky ${names.datasync}.authorizeSubscription: the token is not a string: ${JSON.stringify(token)}`);
    }
    return token;
  }

  /**
   * Runs query(client) in a REPEATABLE READ, READ ONLY transaction on a
   * connection of pool (node-postgres Pool, or anything with connect()),
   * authorises items with its snapshot, and resolves to {result, token}.
   * Falls back to the original order when the server answers "Snapshot
   * too old" or "Snapshots need a database".
   */
  async function subscribeQuery(pool, items, query) {
    const client = await pool.connect();
    let result, snapshot;
    try {
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      try {
        snapshot = await currentSnapshot(client);
        result = await query(client);
        await client.query('COMMIT');
      } catch (e) {
        await client.query('ROLLBACK').catch(() => {});
        throw e;
      }
    } finally {
      client.release();
    }
    try {
      return { result, token: await authorizeSubscription(items, { snapshot }) };
    } catch (e) {
      if (!(e instanceof SnorkyError && e.reply && FALLBACK.has(e.message))) throw e;
    }
    const token = await authorizeSubscription(items);
    const again = await pool.connect();
    try {
      return { result: await query(again), token };
    } finally {
      again.release();
    }
  }

  /** Routes deltas ([{type, model, data} | {type: 'update', model, newData, oldData}]). */
  async function publishDeltas(deltas) {
    await call(names.datasync, 'publishDeltas', { deltas });
  }

  /** Publishes message to the PubSub subscribers of channel (any JSON). */
  async function publish(channel, message) {
    await call(names.pubsub, 'publish', { channel, message });
  }

  /**
   * Resolves to an identity token for identity (any JSON but null), for
   * Chat and Cursors: the page connects to ws://…/ws?token=<token>.
   * `ttl` in seconds (default: the server's tokens.identity_ttl).
   */
  async function authorizeIdentity(identity, { ttl } = {}) {
    if (identity === null || identity === undefined) throw new TypeError('snorky: authorizeIdentity: identity must not be null');
    const params = { identity };
    if (ttl !== undefined) params.ttl = ttl;
    return call(names.identity, 'authorizeIdentity', params);
  }

  /** Closes every connection of identity; resolves to how many. */
  async function disconnectIdentity(identity) {
    return call(names.identity, 'disconnectIdentity', { identity });
  }

  return { call, authorizeSubscription, subscribeQuery, publishDeltas, publish, authorizeIdentity, disconnectIdentity };
}
