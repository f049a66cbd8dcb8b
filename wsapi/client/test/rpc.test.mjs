// Unit tests: the RPC layer, signals, the class helper, stableStringify.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Snorky, fakeSocketClass, flush, quiet } from './fakes.mjs';
import { stableStringify, CycleError } from '../snorky.mjs';

function connect(services = { pubsub: Snorky.PubSub }, options = {}) {
  const S = fakeSocketClass();
  const snorky = new Snorky(S, 'ws://x/ws', services, { reconnect: false, ...options });
  return { S, snorky, sock: S.last() };
}

test('the constructor opens the socket with the URL as the only argument', () => {
  const { S, snorky, sock } = connect();
  assert.equal(S.sockets.length, 1);
  assert.equal(sock.url, 'ws://x/ws');
  assert.equal(snorky.address, 'ws://x/ws');
  assert.equal(snorky.socketClass, S);
  assert.equal(snorky.isConnecting, true);
  assert.equal(snorky.isConnected, false);
  assert.equal(snorky.state, 'connecting');
  assert.ok(snorky.services.pubsub instanceof Snorky.PubSub);
  assert.ok(snorky.services.pubsub instanceof Snorky.RPCService);
  assert.equal(snorky.services.pubsub.name, 'pubsub');
  assert.equal(snorky.services.pubsub.snorky, snorky);
});

test('messages sent before open are queued and flushed in order', async () => {
  const { snorky, sock } = connect();
  const ps = snorky.services.pubsub;
  ps.subscribe({ channel: 'a' });
  ps.publish({ channel: 'a', message: 1 });
  assert.equal(sock.sent.length, 0);
  let connected = 0;
  snorky.connected.add(() => connected++);
  sock.open();
  assert.equal(connected, 1);
  assert.equal(snorky.isConnected, true);
  assert.deepEqual(sock.sent, [
    { service: 'pubsub', message: { command: 'subscribe', params: { channel: 'a' }, callId: 0 } },
    { service: 'pubsub', message: { command: 'publish', params: { channel: 'a', message: 1 }, callId: 1 } },
  ]);
});

test('responses resolve, errors reject with Error(message), per-service callIds', async () => {
  const { snorky, sock } = connect({ pubsub: Snorky.PubSub, messaging: Snorky.Messaging });
  sock.open();
  const a = snorky.services.pubsub.subscribe({ channel: { room: 1 } });
  const b = snorky.services.messaging.registerParticipant({ name: 'Alice' });
  const c = snorky.services.pubsub.unsubscribe({ channel: 'nope' });
  assert.deepEqual(sock.sent.map((e) => e.message.callId), [0, 0, 1]);
  sock.reply('subscribe', null);
  sock.reply('registerParticipant', null, { error: 'Name already registered' });
  sock.reply('unsubscribe', null, { error: 'Not subscribed' });
  assert.equal(await a, null);
  await assert.rejects(b, (e) => e instanceof Error && e.message === 'Name already registered');
  await assert.rejects(c, { message: 'Not subscribed' });
});

test('a reply to an unknown callId is logged and dropped; unknown services are ignored', async () => {
  const { snorky, sock } = connect();
  sock.open();
  const logged = await quiet(() => {
    sock.receive('pubsub', { type: 'response', callId: 99, data: null });
    sock.receive('other', { type: 'message', channel: 'x', message: 1 });
    sock.onmessage({ data: 'not json' });
  });
  assert.equal(logged.length, 2);
  assert.match(logged[0], /unknown call/);
  assert.match(logged[1], /invalid JSON/);
  assert.equal(snorky.isConnected, true);
});

test('notifications: signals and the older callbacks', () => {
  const { snorky, sock } = connect({ pubsub: Snorky.PubSub, messaging: Snorky.Messaging, datasync: Snorky.DataSync });
  sock.open();
  const got = [];
  snorky.services.pubsub.messagePublished.add((m) => got.push(['signal', m.message]));
  snorky.services.pubsub.onMessagePublished = (m) => got.push(['callback', m.message]);
  snorky.services.pubsub.notificationReceived.add((m) => got.push(['notification', m.type]));
  snorky.services.messaging.messageReceived.add((m) => got.push(['dm', m.body]));
  snorky.services.messaging.onParticipantMessage = (m) => got.push(['dm callback', m.body]);
  snorky.services.datasync.deltaReceived.add((d) => got.push(['delta', d.type]));
  snorky.services.datasync.onDelta = (d) => got.push(['onDelta', d.type]);
  sock.receive('pubsub', { type: 'message', channel: 'c', message: 'hi' });
  sock.receive('messaging', { type: 'message', sender: 'A', dest: 'B', body: 'yo' });
  sock.receive('datasync', { type: 'delta', delta: { type: 'insert', model: 'T', data: { id: 1 } } });
  assert.deepEqual(got, [
    ['notification', 'message'], ['signal', 'hi'], ['callback', 'hi'],
    ['dm', 'yo'], ['dm callback', 'yo'],
    ['delta', 'insert'], ['onDelta', 'insert'],
  ]);
});

test('unknown notification types and messages without type are logged', async () => {
  const { sock } = connect();
  sock.open();
  const logged = await quiet(() => {
    sock.receive('pubsub', { type: 'weird' });
    sock.receive('pubsub', { nothing: true });
  });
  assert.equal(logged.length, 2);
});

test('addRPCMethods defines promise-returning methods and refuses existing names', async () => {
  const Echo = new Snorky.Class(Snorky.RPCService, {
    init() {
      Snorky.RPCService.prototype.init.call(this);
      this.inited = true;
    },
  });
  Echo.addRPCMethods(['echo', 'ping']);
  assert.throws(() => Echo.addRPCMethods(['echo']), /already exists/);
  assert.throws(() => Echo.addRPCMethods(['rpcCall']), /already exists/);
  const { snorky, sock } = connect({ echo: Echo });
  assert.equal(snorky.services.echo.inited, true);
  sock.open();
  const p = snorky.services.echo.ping();
  assert.deepEqual(sock.sent[0].message, { command: 'ping', params: {}, callId: 0 });
  sock.reply('ping', 'pong');
  assert.equal(await p, 'pong');
});

test('Snorky.Class: constructors, inheritance, statics, with and without new', () => {
  const A = new Snorky.Class({ constructor(x) { this.x = x; }, hello() { return 'A' + this.x; }, STATIC: { kind: 'a' } });
  const B = Snorky.Class(A, { hello() { return 'B' + A.prototype.hello.call(this); } });
  const b = new B(3);
  assert.equal(b.x, 3);
  assert.equal(b.hello(), 'BA3');
  assert.ok(b instanceof A);
  assert.equal(B.kind, 'a');
  assert.equal(b.constructor, B);
});

test('Snorky.Signal: js-signals interface', () => {
  const s = new Snorky.Signal();
  const got = [];
  const ctx = { n: 'ctx' };
  function a(v) { got.push('a' + v + this.n); }
  const once = (v) => got.push('once' + v);
  const binding = s.add(a, ctx);
  s.addOnce(once);
  s.add((v) => got.push('c' + v));
  assert.equal(s.getNumListeners(), 3);
  assert.ok(s.has(a, ctx));
  s.dispatch(1);
  s.dispatch(2);
  assert.deepEqual(got, ['a1ctx', 'once1', 'c1', 'a2ctx', 'c2']);
  binding.detach();
  assert.equal(s.has(a, ctx), false);
  got.length = 0;
  s.add(() => { got.push('first'); return false; }, null, 10);
  s.dispatch(3);
  assert.deepEqual(got, ['first'], 'a higher priority runs first and returning false stops propagation');
  s.removeAll();
  assert.equal(s.getNumListeners(), 0);
  s.memorize = true;
  s.dispatch('m');
  s.add((v) => got.push('late' + v));
  assert.deepEqual(got, ['first', 'latem']);
});

test('Snorky.Signal and Snorky.Promise are looked up when objects are created', async () => {
  const origSignal = Snorky.Signal;
  const origPromise = Snorky.Promise;
  let signals = 0;
  let promises = 0;
  Snorky.Signal = class extends origSignal { constructor() { super(); signals++; } };
  Snorky.Promise = class extends origPromise { constructor(fn) { super(fn); promises++; } };
  try {
    const { snorky } = connect();
    assert.ok(signals >= 4, `got ${signals} signals built, want at least 4`);
    snorky.services.pubsub.publish({ channel: 'x', message: 1 });
    assert.ok(promises >= 1);
  } finally {
    Snorky.Signal = origSignal;
    Snorky.Promise = origPromise;
  }
});

test('stableStringify sorts keys at every depth and throws CycleError on cycles', () => {
  assert.equal(stableStringify({ b: [1, { d: null, c: 'x' }], a: true }), '{"a":true,"b":[1,{"c":"x","d":null}]}');
  assert.equal(stableStringify('s'), '"s"');
  assert.equal(stableStringify({ u: undefined, f: 1 }), '{"f":1}');
  const o = { a: {} };
  o.a.self = o;
  assert.throws(() => stableStringify(o), (e) => e instanceof CycleError && e instanceof Error);
  const shared = { x: 1 };
  assert.equal(stableStringify([shared, shared]), '[{"x":1},{"x":1}]', 'a shared value is not a cycle');
  assert.equal(Snorky.stableStringify, stableStringify);
});

test('the socket may deliver data that is not a string (ws Buffers)', () => {
  const { snorky, sock } = connect();
  sock.open();
  const got = [];
  snorky.services.pubsub.messagePublished.add((m) => got.push(m.message));
  sock.onmessage({ data: Buffer.from(JSON.stringify({ service: 'pubsub', message: { type: 'message', channel: 1, message: 'buf' } })) });
  assert.deepEqual(got, ['buf']);
});

test('the classic script defines the same API (CommonJS form)', async () => {
  const { createRequire } = await import('node:module');
  const require = createRequire(import.meta.url);
  const S = require('../snorky.js');
  assert.equal(typeof S, 'function');
  assert.equal(S.VERSION, Snorky.VERSION);
  assert.deepEqual(Object.keys(S).filter((k) => k !== 'default').sort(), Object.keys(Snorky).sort());
  await flush();
});
