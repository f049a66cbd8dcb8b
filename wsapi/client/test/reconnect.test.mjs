// Unit tests: the connection state machine, backoff with jitter, close
// codes, idempotent connect(), and what is restored after a reconnect.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Snorky, fakeSocketClass, fakeClock, flush, quiet } from './fakes.mjs';

function setup(services = {}, options = {}) {
  const S = fakeSocketClass();
  const clock = fakeClock();
  const snorky = new Snorky(S, 'ws://x/ws', services, { clock, random: () => 0.5, backoff: { initial: 1000, max: 16000 }, ...options });
  const states = [];
  snorky.stateChanged.add((s) => states.push(s));
  return { S, clock, snorky, states };
}

test('states: connecting, open, reconnecting, open, closed', () => {
  const { S, clock, snorky, states } = setup();
  assert.equal(snorky.state, 'connecting');
  S.last().open();
  S.last().serverClose(1001, 'server shutting down');
  assert.equal(snorky.state, 'reconnecting');
  assert.equal(snorky.lastCloseCode, 1001);
  assert.equal(snorky.lastCloseReason, 'server shutting down');
  clock.advance(clock.pending()[0]);
  assert.equal(S.sockets.length, 2);
  S.last().open();
  snorky.disconnect();
  assert.deepEqual(states, ['open', 'reconnecting', 'open', 'closed']);
  assert.deepEqual(S.sockets[1].closed, { code: 1000, reason: 'bye' });
  assert.equal(snorky.isConnected, false);
  clock.advance(60000);
  assert.equal(S.sockets.length, 2, 'no reconnect after disconnect()');
});

test('backoff grows exponentially with jitter, capped, and resets once stable', () => {
  const { S, clock, snorky } = setup({}, { random: () => 0 });
  const delays = [];
  for (let i = 0; i < 7; i++) {
    S.last().serverClose(1006);
    delays.push(clock.pending()[0]);
    clock.advance(delays[delays.length - 1]);
  }
  // random() = 0: half of each step.
  assert.deepEqual(delays, [500, 1000, 2000, 4000, 8000, 8000, 8000]);
  S.last().open();
  clock.advance(5000);
  S.last().serverClose(1001);
  assert.equal(clock.pending()[0], 500, 'a connection that stayed open resets the backoff');
  assert.equal(snorky.attempts, 1);
});

test('jitter stays between half and all of the step', () => {
  for (const r of [0, 0.25, 0.999]) {
    const { snorky } = setup({}, { random: () => r });
    for (let n = 0; n < 6; n++) {
      const step = Math.min(16000, 1000 * 2 ** n);
      const d = snorky.retryDelay(n, 1006);
      assert.ok(d >= step / 2 && d <= step, `attempt ${n}: ${d} not in [${step / 2}, ${step}]`);
    }
  }
});

test('close codes: 4001 stops, 4029 waits longer, 4008 comes back at once, 4002 waits for use', () => {
  {
    const { S, clock, snorky } = setup();
    S.last().open();
    S.last().serverClose(4001, 'invalid identity token');
    assert.equal(snorky.state, 'closed');
    assert.equal(snorky.lastCloseCode, 4001);
    assert.equal(snorky.lastCloseReason, 'invalid identity token');
    clock.advance(600000);
    assert.equal(S.sockets.length, 1);
    snorky.connect();
    assert.equal(S.sockets.length, 2, 'the app may connect again (e.g. with a new token)');
  }
  {
    const { S, clock } = setup();
    S.last().open();
    S.last().serverClose(4029, 'rate limit exceeded');
    const d = clock.pending()[0];
    assert.ok(d >= 30000 && d <= 45000, `4029: waited ${d} ms, want 30 to 45 s`);
  }
  {
    const { S, clock } = setup();
    S.last().open();
    S.last().serverClose(4008, 'slow consumer');
    assert.ok(clock.pending()[0] <= 100, `4008: waited ${clock.pending()[0]} ms, want at most 100`);
  }
  {
    const { S, clock, snorky } = setup({ pubsub: Snorky.PubSub });
    S.last().open();
    S.last().serverClose(4002, 'idle timeout');
    assert.equal(snorky.state, 'closed');
    clock.advance(600000);
    assert.equal(S.sockets.length, 1);
    snorky.services.pubsub.subscribe({ channel: 'x' });
    assert.equal(S.sockets.length, 2, 'the next message reconnects');
    S.last().open();
    assert.deepEqual(S.last().commands(), ['pubsub.subscribe']);
  }
});

test('reconnect: false keeps the original behaviour', () => {
  const { S, clock, snorky } = setup({}, { reconnect: false });
  S.last().open();
  S.last().serverClose(1001);
  clock.advance(600000);
  assert.equal(S.sockets.length, 1);
  assert.equal(snorky.state, 'closed');
});

test('connect() is idempotent: an original app that reconnects itself opens one socket', () => {
  const { S, clock, snorky } = setup();
  snorky.connect();
  snorky.connect();
  assert.equal(S.sockets.length, 1);
  S.last().open();
  snorky.connect();
  assert.equal(S.sockets.length, 1);
  snorky.disconnected.add(() => snorky.connect());
  S.last().serverClose(1006);
  assert.equal(S.sockets.length, 1, 'the scheduled reconnection stands');
  clock.advance(clock.pending()[0]);
  assert.equal(S.sockets.length, 2);
  snorky.reconnectNow();
  assert.equal(S.sockets.length, 2);
});

test('reconnectNow skips the wait', () => {
  const { S, clock, snorky } = setup();
  S.last().open();
  S.last().serverClose(1006);
  snorky.reconnectNow();
  assert.equal(S.sockets.length, 2);
  assert.deepEqual(clock.pending(), []);
});

test('events of an old socket are ignored', () => {
  const { S, clock, snorky } = setup({ pubsub: Snorky.PubSub });
  const old = S.last();
  old.open();
  old.serverClose(1006);
  clock.advance(clock.pending()[0]);
  S.last().open();
  const got = [];
  snorky.services.pubsub.messagePublished.add((m) => got.push(m));
  old.receive('pubsub', { type: 'message', channel: 'x', message: 1 });
  old.onclose({ code: 1006 });
  assert.equal(snorky.state, 'open');
  assert.deepEqual(got, []);
});

test('calls in flight on a lost socket are rejected; queued ones are sent on the next', async () => {
  const { S, clock, snorky } = setup({ pubsub: Snorky.PubSub });
  S.last().open();
  const inflight = snorky.services.pubsub.publish({ channel: 'a', message: 1 });
  S.last().serverClose(1006);
  await assert.rejects(inflight, { message: 'Connection lost' });
  const queued = snorky.services.pubsub.publish({ channel: 'a', message: 2 });
  clock.advance(clock.pending()[0]);
  S.last().open();
  assert.deepEqual(S.last().sent.map((e) => e.message.params.message), [2]);
  S.last().reply('publish', null);
  assert.equal(await queued, null);
});

test('after a reconnect: identity first, then the queue, then channels, names, chats and documents', async () => {
  const { S, clock, snorky } = setup({
    identity: Snorky.Identity, pubsub: Snorky.PubSub, messaging: Snorky.Messaging, chat: Snorky.Chat, cursors: Snorky.Cursors,
  });
  const { identity, pubsub, messaging, chat, cursors } = snorky.services;
  let sock = S.last();
  sock.open();
  const auth = identity.authenticate({ token: 'id-tok' });
  sock.reply('authenticate', 'alice');
  assert.equal(await auth, 'alice');
  const room = pubsub.subscribe({ channel: { room: 1 } }); // unanswered when the socket is lost
  pubsub.subscribe({ channel: 'gone' }).catch(() => {});
  pubsub.unsubscribe({ channel: 'gone' }).catch(() => {});
  const refused = pubsub.subscribe({ channel: 'refused' });
  sock.reply('subscribe', null, { error: 'Not authorized' });
  await assert.rejects(refused, { message: 'Not authorized' });
  messaging.registerParticipant({ name: 'Alice' });
  sock.reply('registerParticipant', null);
  chat.join({ channel: '#cats' });
  sock.reply('join', { members: ['alice'] });
  const docP = cursors.join({ document: 'Sheet1' });
  sock.reply('join', { cursors: [{ publicHandle: 5, document: 'Sheet1', position: 1, status: 's', owner: 'bob' }, { publicHandle: 6, document: 'Sheet1', position: 1, status: 's', owner: 'carol' }] });
  const doc = await docP;
  assert.deepEqual(doc.cursors.map((c) => c.owner), ['bob', 'carol']);
  const [own, created] = doc.createCursor({ position: 3, status: 'typing' });
  sock.reply('createCursor', 77);
  assert.equal(await created, 77);
  assert.equal(own.publicHandle, 77);
  await flush();

  sock.serverClose(1001, 'server shutting down');
  const queued = pubsub.publish({ channel: 'queued', message: 1 });
  clock.advance(clock.pending()[0]);
  sock = S.last();
  sock.open();
  assert.deepEqual(sock.commands(), [
    'identity.authenticate', 'pubsub.publish', 'pubsub.subscribe', 'messaging.registerParticipant', 'chat.join', 'cursors.join',
  ]);
  assert.deepEqual(sock.sent[0].message.params, { token: 'id-tok' });
  assert.deepEqual(sock.sent[2].message.params, { channel: { room: 1 } });
  assert.deepEqual(sock.sent[5].message.params, { document: 'Sheet1' });

  const rejoined = [];
  chat.rejoined.add((ch, r) => rejoined.push([ch, r.members]));
  const events = [];
  doc.cursorRemoved.add((c) => events.push(['removed', c.owner]));
  doc.cursorAdded.add((c) => events.push(['added', c.owner]));
  const answer = (service, data) => {
    const e = sock.sent.find((x) => x.service === service && x.message.command !== 'createCursor' && !x.answered);
    e.answered = true;
    sock.receive(service, { type: 'response', callId: e.message.callId, data });
  };
  answer('identity', 'alice');
  answer('pubsub', null); // publish
  answer('pubsub', null); // subscribe {room: 1}
  answer('messaging', null);
  answer('chat', { members: ['alice', 'dave'] });
  answer('cursors', { cursors: [{ publicHandle: 6, document: 'Sheet1', position: 1, status: 's', owner: 'carol' }, { publicHandle: 9, document: 'Sheet1', position: 0, status: null, owner: 'erin' }] });
  await flush();
  assert.equal(await queued, null);
  assert.equal(await room, null, 'the subscribe left unanswered is settled by its restoration');
  assert.deepEqual(rejoined, [['#cats', ['alice', 'dave']]]);
  assert.deepEqual(events, [['removed', 'bob'], ['added', 'erin']]);
  const recreate = sock.sent.find((e) => e.message.command === 'createCursor');
  assert.deepEqual(recreate.message.params, { privateHandle: own.privateHandle, document: 'Sheet1', position: 3, status: 'typing' });
  sock.reply('createCursor', 78);
  await flush();
  assert.equal(own.publicHandle, 78);
  assert.equal(own.isSynchronized(), true);
});

test('a subscribe queued while disconnected is not sent twice', () => {
  const { S, clock, snorky } = setup({ pubsub: Snorky.PubSub });
  S.last().open();
  S.last().serverClose(1006);
  snorky.services.pubsub.subscribe({ channel: 'late' });
  clock.advance(clock.pending()[0]);
  S.last().open();
  assert.deepEqual(S.last().commands(), ['pubsub.subscribe']);
});

test('a failed restoration is logged and rejects the unanswered call', async () => {
  const { S, clock, snorky } = setup({ identity: Snorky.Identity });
  S.last().open();
  snorky.services.identity.authenticate({ token: 't' });
  S.last().reply('authenticate', 'me');
  S.last().serverClose(1006);
  clock.advance(clock.pending()[0]);
  S.last().open();
  const logged = await quiet(async () => {
    S.last().reply('authenticate', null, { error: 'Token expired' });
    await flush();
  });
  assert.equal(logged.length, 1);
  assert.match(logged[0], /Token expired/);
});

test('an original app that subscribes again on connected gets the restoration, not "Already subscribed"', async () => {
  const { S, clock, snorky } = setup({ pubsub: Snorky.PubSub });
  S.last().open();
  const first = snorky.services.pubsub.subscribe({ channel: 'news' });
  S.last().reply('subscribe', null);
  await first;
  const again = [];
  snorky.connected.add(() => again.push(snorky.services.pubsub.subscribe({ channel: 'news' })));
  S.last().serverClose(1006);
  clock.advance(clock.pending()[0]);
  S.last().open();
  assert.deepEqual(S.last().commands(), ['pubsub.subscribe'], 'one subscribe on the new socket');
  S.last().reply('subscribe', null);
  assert.equal(await again[0], null);
  // A genuine second subscribe on the same socket is still the server's to refuse.
  const twice = snorky.services.pubsub.subscribe({ channel: 'other' });
  S.last().reply('subscribe', null);
  await twice;
  snorky.services.pubsub.subscribe({ channel: 'other' }).catch(() => {});
  assert.equal(S.last().commands().length, 3);
});
