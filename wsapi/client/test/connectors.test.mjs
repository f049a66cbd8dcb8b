// Unit tests: the Chat, Cursors and Identity connectors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Snorky, fakeSocketClass, quiet } from './fakes.mjs';

function setup(services) {
  const S = fakeSocketClass();
  const snorky = new Snorky(S, 'ws://x/ws', services, { reconnect: false });
  S.last().open();
  return { snorky, sock: S.last() };
}

test('Chat dispatches message, presence and read notifications', () => {
  const { snorky, sock } = setup({ chat: Snorky.Chat });
  const got = [];
  const chat = snorky.services.chat;
  chat.messageReceived.add((m) => got.push(['message', m.body]));
  chat.presenceReceived.add((m) => got.push(['presence', m.status]));
  chat.readReceived.add((m) => got.push(['read', m.channel]));
  sock.receive('chat', { type: 'message', from: 'bob', channel: '#c', body: 'meow', timestamp: 't' });
  sock.receive('chat', { type: 'presence', from: 'bob', channel: '#c', status: 'left', timestamp: 't' });
  sock.receive('chat', { type: 'read', channel: '#c', timestamp: 't' });
  assert.deepEqual(got, [['message', 'meow'], ['presence', 'left'], ['read', '#c']]);
  for (const m of ['join', 'leave', 'send', 'read']) assert.equal(typeof chat[m], 'function');
});

test('Cursors: documents, foreign cursors, own cursors', async () => {
  const { snorky, sock } = setup({ cursors: Snorky.Cursors });
  const cursors = snorky.services.cursors;
  const p = cursors.join({ document: { sheet: 1 } });
  sock.reply('join', { cursors: [{ publicHandle: 1, document: { sheet: 1 }, position: 0, status: null, owner: 'bob' }] });
  const doc = await p;
  assert.ok(doc instanceof Snorky.Cursors.Document);
  assert.deepEqual(doc.name, { sheet: 1 });
  assert.equal(doc.service, cursors);
  assert.ok(doc.cursors[0] instanceof Snorky.Cursors.ForeignCursor);
  assert.ok(doc.cursors[0] instanceof Snorky.Cursors.Cursor);
  assert.equal(doc.cursors[0].isMine, false);
  const seen = [];
  doc.cursorAdded.add((c) => seen.push(['added', c.publicHandle]));
  doc.cursorUpdated.add((c) => seen.push(['updated', c.publicHandle, c.position]));
  doc.cursorRemoved.add((c) => seen.push(['removed', c.publicHandle]));
  // Keys in another order name the same document.
  sock.receive('cursors', { type: 'cursorAdded', cursor: { publicHandle: 2, document: { sheet: 1 }, position: 5, status: 'x', owner: 'carol' } });
  sock.receive('cursors', { type: 'cursorUpdated', cursor: { publicHandle: 1, document: { sheet: 1 }, position: 9, status: null, owner: 'bob' } });
  sock.receive('cursors', { type: 'cursorRemoved', cursor: { publicHandle: 2, document: { sheet: 1 } } });
  assert.deepEqual(seen, [['added', 2], ['updated', 1, 9], ['removed', 2]]);
  assert.deepEqual(doc.cursors.map((c) => c.publicHandle), [1]);
  assert.throws(() => sock.receive('cursors', { type: 'cursorAdded', cursor: { publicHandle: 3, document: 'other' } }), /not joined/);

  const [own, created] = doc.createCursor({ position: 1, status: 'typing' });
  assert.ok(own instanceof Snorky.Cursors.OwnCursor);
  assert.equal(own.isMine, true);
  assert.ok(own.privateHandle >= 0 && own.privateHandle <= 255);
  assert.equal(own.isSynchronized(), false);
  const req = sock.reply('createCursor', 4000);
  assert.deepEqual(req.message.params, { privateHandle: own.privateHandle, document: { sheet: 1 }, position: 1, status: 'typing' });
  await created;
  assert.equal(own.publicHandle, 4000);
  assert.equal(own.isSynchronized(), true);
  assert.throws(() => own.update({ owner: 'me' }), /only position and status/);
  const before = sock.sent.length;
  await own.update({ position: 1 });
  assert.equal(sock.sent.length, before, 'no call when nothing changed');
  own.update({ position: 2, status: 'typing' });
  assert.deepEqual(sock.sent[sock.sent.length - 1].message.params, { privateHandle: own.privateHandle, newData: { position: 2 } });
  sock.reply('updateCursor', null);
  own.remove();
  assert.equal(doc.cursors.includes(own), false);
  assert.equal(sock.sent[sock.sent.length - 1].message.command, 'removeCursor');
  sock.reply('removeCursor', null);

  const leave = cursors.rpcCall('leave', { document: { sheet: 1 } });
  sock.reply('leave', null);
  await leave;
  assert.deepEqual(Object.keys(cursors.documents), []);
});

test('Cursors: more than 100 own cursors throw at the client', async () => {
  const { snorky, sock } = setup({ cursors: Snorky.Cursors });
  const p = snorky.services.cursors.join({ document: 'd' });
  sock.reply('join', { cursors: [] });
  const doc = await p;
  const handles = new Set();
  for (let i = 0; i < 101; i++) {
    const [own, created] = doc.createCursor({ position: i });
    created.catch(() => {});
    handles.add(own.privateHandle);
  }
  assert.equal(handles.size, 101, 'private handles are unique');
  assert.throws(() => doc.createCursor({}), { message: 'Too many cursors (thrown at client side)' });
});

test('Identity.authenticate resolves with the identity', async () => {
  const { snorky, sock } = setup({ identity: Snorky.Identity });
  const p = snorky.services.identity.authenticate({ token: 'tok' });
  sock.reply('authenticate', { user: 7 });
  assert.deepEqual(await p, { user: 7 });
  assert.deepEqual(snorky.services.identity.identity, { user: 7 });
  const bad = snorky.services.identity.authenticate({ token: 'x' });
  sock.reply('authenticate', null, { error: 'Identity already set' });
  await assert.rejects(bad, { message: 'Identity already set' });
});

test('the server\'s error for a malformed message is logged', async () => {
  const { sock } = setup({});
  const logged = await quiet(() => sock.onmessage({ data: JSON.stringify({ service: null, message: { type: 'error', callId: null, message: 'Invalid JSON' } }) }));
  assert.equal(logged.length, 1);
  assert.match(logged[0], /Invalid JSON/);
});
