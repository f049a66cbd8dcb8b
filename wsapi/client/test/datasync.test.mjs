// Unit tests: DataSync resumable acquire, offsets, resume after a
// reconnect, must-refetch, positions, awaitXid and syncCollection.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Snorky, fakeSocketClass, fakeClock, flush, quiet } from './fakes.mjs';

const off = (n) => n.toString(16).toUpperCase().padStart(32, '0');

function setup(options = {}) {
  const S = fakeSocketClass();
  const clock = fakeClock();
  const snorky = new Snorky(S, 'ws://x/ws', { datasync: Snorky.DataSync }, { clock, random: () => 0.5, ...options });
  S.last().open();
  const ds = snorky.services.datasync;
  const refetch = [];
  ds.mustRefetch.add((e) => refetch.push(e));
  const reconnect = () => {
    S.last().serverClose(1006);
    clock.advance(clock.pending()[0]);
    S.last().open();
    return S.last();
  };
  return { S, clock, snorky, ds, refetch, reconnect };
}

const delta = (n, extra = {}) => ({ type: 'delta', delta: { type: 'insert', model: 'Task', data: { id: n }, offset: off(n), ...extra } });

test('every acquire is resumable; the result is recorded', async () => {
  const { S, ds } = setup();
  const p = ds.acquireSubscription({ token: 'tok' });
  assert.deepEqual(S.last().sent[0].message.params, { token: 'tok', resumable: true });
  S.last().receive('datasync', delta(3));
  S.last().reply('acquireSubscription', { epoch: 'E1', offset: off(4), resume: 'R1' });
  assert.deepEqual(await p, { epoch: 'E1', offset: off(4), resume: 'R1' });
  assert.equal(ds.epoch, 'E1');
  assert.equal(ds.offset, off(4));
  assert.deepEqual(ds.subscriptions.tok, { token: 'tok', models: null, resume: 'R1', epoch: 'E1', offset: off(4), live: true });
});

test('against a server without resume, acquire falls back to the original form', async () => {
  const { S, ds, refetch, reconnect } = setup();
  const p = ds.acquireSubscription({ token: 'tok' });
  S.last().reply('acquireSubscription', null, { error: 'Invalid params' });
  await flush();
  assert.deepEqual(S.last().sent[1].message.params, { token: 'tok' });
  S.last().reply('acquireSubscription', null);
  assert.equal(await p, null);
  assert.equal(ds.resumable, false);
  reconnect();
  await flush();
  assert.deepEqual(refetch, [{ reason: 'the server does not support resuming subscriptions', models: null, token: 'tok' }]);
  assert.deepEqual(ds.subscriptions, {});
});

test('other acquire errors are the caller\'s', async () => {
  const { S, ds } = setup();
  const p = ds.acquireSubscription({ token: 'tok' });
  S.last().reply('acquireSubscription', null, { error: 'No such subscription' });
  await assert.rejects(p, { message: 'No such subscription' });
  assert.deepEqual(ds.subscriptions, {});
});

test('after a reconnect each subscription resumes from the greatest offset seen while it was live', async () => {
  const { S, ds, reconnect } = setup();
  const a = ds.acquireSubscription({ token: 'A' });
  S.last().reply('acquireSubscription', { epoch: 'E', offset: off(10), resume: 'RA' });
  await a;
  S.last().receive('datasync', delta(12));
  S.last().receive('datasync', { type: 'position', epoch: 'E', offset: off(15) });
  // B's pending deltas are older than what A has seen: offsets on one
  // connection are not monotonic.
  const b = ds.acquireSubscription({ token: 'B' });
  S.last().receive('datasync', delta(7));
  S.last().reply('acquireSubscription', { epoch: 'E', offset: off(16), resume: 'RB' });
  await b;
  S.last().receive('datasync', delta(20));
  const sock = reconnect();
  const resumes = sock.sent.filter((e) => e.message.command === 'resumeSubscription').map((e) => e.message.params);
  assert.deepEqual(resumes, [
    { resume: 'RA', epoch: 'E', offset: off(20) },
    { resume: 'RB', epoch: 'E', offset: off(20) },
  ]);
  // A resumes; B's connection drops again before its answer.
  const [ra] = sock.sent.filter((e) => e.message.params.resume === 'RA');
  sock.receive('datasync', delta(21));
  sock.receive('datasync', { type: 'response', callId: ra.message.callId, data: { epoch: 'E', offset: off(22), resume: 'RA2' } });
  await flush();
  sock.receive('datasync', delta(25));
  const sock2 = reconnect();
  const resumes2 = sock2.sent.filter((e) => e.message.command === 'resumeSubscription').map((e) => e.message.params);
  assert.deepEqual(resumes2, [
    { resume: 'RA2', epoch: 'E', offset: off(25) },
    { resume: 'RB', epoch: 'E', offset: off(20) },
  ], 'B was not live on the second socket: it keeps its offset');
});

test('"Must refetch: …" ends the subscription and signals the app', async () => {
  const { S, ds, refetch, reconnect } = setup();
  const a = ds.acquireSubscription({ token: 'A' }, { models: ['Task'] });
  S.last().reply('acquireSubscription', { epoch: 'E', offset: off(1), resume: 'RA' });
  await a;
  const sock = reconnect();
  sock.reply('resumeSubscription', null, { error: 'Must refetch: offset is outside the replay window' });
  await flush();
  assert.deepEqual(refetch, [{ reason: 'offset is outside the replay window', models: ['Task'], token: 'A' }]);
  assert.deepEqual(ds.subscriptions, {});
  reconnect();
  assert.equal(S.last().sent.length, 0, 'nothing to resume any more');
});

test('the mustRefetch notification ends the subscriptions of its models', async () => {
  const { S, ds, refetch } = setup();
  for (const [t, models] of [['A', ['Task']], ['B', ['User']], ['C', null]]) {
    const p = ds.acquireSubscription({ token: t }, { models });
    S.last().reply('acquireSubscription', { epoch: 'E', offset: off(1), resume: 'R' + t });
    await p;
  }
  S.last().receive('datasync', { type: 'mustRefetch', reason: 'transaction too large', models: ['Task'] });
  assert.deepEqual(refetch.map((e) => e.token), ['A', 'C'], 'a subscription of unknown models is refetched to be safe');
  assert.deepEqual(Object.keys(ds.subscriptions), ['B']);
  S.last().receive('datasync', { type: 'mustRefetch', reason: 'the stream was reset', models: null });
  assert.deepEqual(refetch.map((e) => e.token), ['A', 'C', 'B']);
  assert.equal(refetch[2].reason, 'the stream was reset');
});

test('cancelSubscription forgets the subscription', async () => {
  const { S, ds, reconnect } = setup();
  const p = ds.acquireSubscription({ token: 'A' });
  S.last().reply('acquireSubscription', { epoch: 'E', offset: off(1), resume: 'RA' });
  await p;
  ds.cancelSubscription({ token: 'A' });
  S.last().reply('cancelSubscription', null);
  assert.equal(reconnect().sent.length, 0);
});

test('awaitXid resolves once a delta of the transaction was handled, or rejects after the timeout', async () => {
  const { S, clock, ds } = setup();
  const applied = [];
  ds.deltaReceived.add((d) => applied.push(d.xid));
  const p = ds.awaitXid(700, { timeout: 5000 });
  const late = ds.awaitXid('701', { timeout: 5000 });
  let state = 'pending';
  p.then(() => { state = 'resolved'; });
  S.last().receive('datasync', delta(1, { xid: 699 }));
  await flush();
  assert.equal(state, 'pending');
  S.last().receive('datasync', delta(2, { xid: 700 }));
  assert.equal(await p, 700);
  assert.deepEqual(applied, [699, 700], 'handlers ran before the promise resolved');
  assert.equal(await ds.awaitXid(699), 699, 'a transaction already seen resolves at once');
  clock.advance(5000);
  await assert.rejects(late, /701 not seen within 5000 ms/);
});

test('syncCollection loads, acquires, applies deltas, and reloads on must-refetch', async () => {
  const { S, ds, reconnect } = setup();
  const tasks = [];
  const collection = new Snorky.DataSync.ArrayCollection(tasks);
  const loads = [];
  let version = 0;
  const load = () => {
    version++;
    loads.push(version);
    return Promise.resolve({ items: [{ id: 1, v: version }, { id: 2, v: version }], token: 'tok' + version });
  };
  const refetched = [];
  collection.mustRefetch.add((e) => refetched.push(e.reason));
  const live = ds.syncCollection({ model: 'Task', collection, load });
  await flush();
  assert.deepEqual(tasks, [{ id: 1, v: 1 }, { id: 2, v: 1 }]);
  assert.deepEqual(S.last().sent[0].message.params, { token: 'tok1', resumable: true });
  // A pending delta arrives before the acquire's answer, and is applied.
  S.last().receive('datasync', { type: 'delta', delta: { type: 'delete', model: 'Task', data: { id: 2 }, offset: off(5) } });
  S.last().receive('datasync', { type: 'delta', delta: { type: 'insert', model: 'Other', data: { id: 9 }, offset: off(6) } });
  S.last().reply('acquireSubscription', { epoch: 'E', offset: off(6), resume: 'R1' });
  await live.ready;
  assert.equal(live.state, 'live');
  assert.deepEqual(tasks, [{ id: 1, v: 1 }]);
  const sock = reconnect();
  sock.reply('resumeSubscription', null, { error: 'Must refetch: resume credential expired' });
  await flush();
  await flush();
  assert.deepEqual(refetched, ['resume credential expired']);
  assert.deepEqual(loads, [1, 2]);
  assert.deepEqual(tasks, [{ id: 1, v: 2 }, { id: 2, v: 2 }]);
  const acquire = sock.sent.filter((e) => e.message.command === 'acquireSubscription');
  assert.deepEqual(acquire.map((e) => e.message.params.token), ['tok2']);
  live.cancel();
  assert.equal(live.state, 'cancelled');
});

test('syncCollection tries again after a failed load', async () => {
  const { clock, ds } = setup();
  let n = 0;
  const tasks = [];
  const live = ds.syncCollection({
    model: 'Task',
    collection: new Snorky.DataSync.ArrayCollection(tasks),
    retryDelay: 2000,
    load: () => (++n === 1 ? Promise.reject(new Error('503')) : { items: [{ id: 1 }], token: 't' }),
  });
  await flush();
  assert.equal(live.state, 'error');
  assert.equal(live.error.message, '503');
  clock.advance(2000);
  await flush();
  assert.equal(n, 2);
  assert.deepEqual(tasks, [{ id: 1 }]);
  assert.equal(live.state, 'live');
});

test('positions update the offset and are dispatched', () => {
  const { S, ds } = setup();
  const got = [];
  ds.positionReceived.add((m) => got.push(m.offset));
  S.last().receive('datasync', { type: 'position', epoch: 'E9', offset: off(42) });
  assert.deepEqual(got, [off(42)]);
  assert.equal(ds.offset, off(42));
  assert.equal(ds.epoch, 'E9');
});

test('resumable: false never asks for resumable subscriptions', async () => {
  const { S, ds } = setup({ resumable: false });
  ds.acquireSubscription({ token: 't' });
  assert.deepEqual(S.last().sent[0].message.params, { token: 't' });
  await quiet(() => {});
});
