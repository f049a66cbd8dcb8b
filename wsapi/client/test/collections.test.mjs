// Unit tests: collections, iterators and the delta processor.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Snorky, quiet } from './fakes.mjs';

const { ArrayCollection, SingleItemCollection, CollectionDeltaProcessor, Collection, ArrayIterator, SingleItemIterator } = Snorky.DataSync;

test('ArrayCollection works on the array in place, with transformItem', () => {
  const array = [];
  const c = new ArrayCollection(array, { transformItem: (x) => ({ ...x, seen: true }) });
  assert.ok(c instanceof Collection);
  c.insert({ id: 1 });
  assert.deepEqual(array, [{ id: 1, seen: true }]);
  const it = c.getIterator();
  assert.ok(it instanceof ArrayIterator);
  assert.equal(it.hasNext(), true);
  assert.deepEqual(it.next(), { id: 1, seen: true });
  it.update({ id: 1, v: 2 });
  assert.deepEqual(array, [{ id: 1, v: 2, seen: true }]);
  assert.equal(it.hasNext(), false);
  assert.throws(() => it.next(), /^Error: Busted iterator$/);
});

test('ArrayIterator errors are those of the original client', () => {
  const array = [{ id: 1 }, { id: 2 }];
  const it = new ArrayCollection(array).getIterator();
  assert.throws(() => it.remove(), { message: 'Iterator not pointing to an item! (call next())' });
  assert.throws(() => it.update({}), { message: 'Iterator not pointing to an item! (call next())' });
  it.next();
  it.remove();
  assert.throws(() => it.remove(), { message: 'Iterator pointing to a deleted item! (call next())' });
  assert.throws(() => it.update({}), { message: 'Iterator pointing to a deleted item! (call next())' });
  assert.deepEqual(it.next(), { id: 2 }, 'the iterator continues after a remove');
  assert.deepEqual(array, [{ id: 2 }]);
});

test('SingleItemCollection', async () => {
  let item = { id: 7, v: 1 };
  let removed = 0;
  const c = new SingleItemCollection(() => item, (x) => { item = x; }, () => { removed++; });
  const it = c.getIterator();
  assert.ok(it instanceof SingleItemIterator);
  assert.deepEqual(it.next(), { id: 7, v: 1 });
  it.update({ id: 7, v: 2 });
  assert.deepEqual(item, { id: 7, v: 2 });
  assert.throws(() => it.next(), /Busted iterator/);
  it.remove();
  assert.equal(removed, 1);
  const logged = await quiet(() => c.insert({ id: 8 }));
  assert.equal(logged.length, 1);
});

function setup(array = []) {
  const c = new ArrayCollection(array);
  return { array, c, p: new CollectionDeltaProcessor({ Task: c }) };
}

test('the processor applies insert, update, delete', () => {
  const { array, p } = setup([{ id: 1, t: 'a' }]);
  p.processDelta({ type: 'insert', model: 'Task', data: { id: 2, t: 'b' } });
  p.processDelta({ type: 'update', model: 'Task', oldData: { id: 1, t: 'a' }, newData: { id: 1, t: 'A' } });
  p.processDelta({ type: 'update', model: 'Task', oldData: { id: 9 }, newData: { id: 9, t: 'x' } });
  p.processDelta({ type: 'delete', model: 'Task', data: { id: 2 } });
  assert.deepEqual(array, [{ id: 1, t: 'A' }]);
});

test('the default itemsAreEqual compares ids loosely', () => {
  const { array, p } = setup([{ id: 1, t: 'a' }]);
  p.processDelta({ type: 'update', model: 'Task', oldData: { id: '1' }, newData: { id: 1, t: 'b' } });
  assert.deepEqual(array, [{ id: 1, t: 'b' }]);
});

test('an insert of an existing item is an update (D8)', () => {
  const { array, p } = setup([{ id: 1, t: 'a' }]);
  p.processDelta({ type: 'insert', model: 'Task', data: { id: 1, t: 'again' } });
  assert.deepEqual(array, [{ id: 1, t: 'again' }]);
});

test('a delta whose exact offset was applied is skipped; older offsets are not', () => {
  const { array, p } = setup();
  const o = (n) => n.toString(16).toUpperCase().padStart(32, '0');
  p.processDelta({ type: 'insert', model: 'Task', data: { id: 1, n: 1 }, offset: o(10) });
  p.processDelta({ type: 'update', model: 'Task', oldData: { id: 1 }, newData: { id: 1, n: 2 }, offset: o(20) });
  // Replayed: skipped, so the item keeps n: 2.
  p.processDelta({ type: 'insert', model: 'Task', data: { id: 1, n: 1 }, offset: o(10) });
  assert.deepEqual(array, [{ id: 1, n: 2 }]);
  // An older offset never seen (a newly acquired subscription's pending
  // delta) is applied: no high-water mark.
  p.processDelta({ type: 'insert', model: 'Task', data: { id: 2 }, offset: o(5) });
  assert.deepEqual(array, [{ id: 1, n: 2 }, { id: 2 }]);
  assert.equal(p.hasApplied(o(5)), true);
  p.processDelta({ type: 'delete', model: 'Task', data: { id: 2 }, offset: o(5) });
  assert.equal(array.length, 2, 'the same offset again is skipped');
  p.reset();
  p.processDelta({ type: 'delete', model: 'Task', data: { id: 2 }, offset: o(5) });
  assert.equal(array.length, 1, 'after reset the offset is new');
});

test('remembered offsets are bounded', () => {
  const c = new ArrayCollection([]);
  const p = new CollectionDeltaProcessor({ Task: c }, { maxRememberedOffsets: 3 });
  for (let i = 0; i < 5; i++) p.processDelta({ type: 'insert', model: 'Task', data: { id: i }, offset: `o${i}` });
  assert.equal(p.hasApplied('o0'), false);
  assert.equal(p.hasApplied('o4'), true);
});

test('truncate clears the collection through its iterator', () => {
  const { array, p } = setup([{ id: 1 }, { id: 2 }, { id: 3 }]);
  p.processDelta({ type: 'truncate', model: 'Task', offset: 'x1' });
  assert.deepEqual(array, []);
  let item = { id: 1 };
  let removed = 0;
  const single = new SingleItemCollection(() => item, () => {}, () => { removed++; });
  new CollectionDeltaProcessor({ One: single }).processDelta({ type: 'truncate', model: 'One' });
  assert.equal(removed, 1);
});

test('tagged collections use delta.tag; unknown models, tags and types are logged', async () => {
  const red = [];
  const blue = [];
  const p = new CollectionDeltaProcessor({ Car: { red: new ArrayCollection(red), blue: new ArrayCollection(blue) } });
  p.processDelta({ type: 'insert', model: 'Car', tag: 'red', data: { id: 1 } });
  p.processDelta({ type: 'insert', model: 'Car', tag: 'blue', data: { id: 2 } });
  assert.deepEqual([red, blue], [[{ id: 1 }], [{ id: 2 }]]);
  const logged = await quiet(() => {
    p.processDelta({ type: 'insert', model: 'Bike', data: { id: 3 } });
    p.processDelta({ type: 'insert', model: 'Car', tag: 'green', data: { id: 3 } });
    p.processDelta({ type: 'explode', model: 'Car', tag: 'red', data: { id: 1 } });
  });
  assert.equal(logged.length, 3);
  assert.deepEqual([red, blue], [[{ id: 1 }], [{ id: 2 }]]);
});

test('a custom itemsAreEqual', () => {
  const array = [{ key: 'a', v: 1 }];
  const p = new CollectionDeltaProcessor({ M: new ArrayCollection(array) }, { itemsAreEqual: (x, y) => x.key === y.key });
  p.processDelta({ type: 'insert', model: 'M', data: { key: 'a', v: 2 } });
  assert.deepEqual(array, [{ key: 'a', v: 2 }]);
});

test('handleMustRefetch dispatches on the collections of the models', () => {
  const a = new ArrayCollection([]);
  const b = new ArrayCollection([]);
  const p = new CollectionDeltaProcessor({ A: a, B: { t: b } });
  const got = [];
  a.mustRefetch.add((e) => got.push(['A', e.reason]));
  b.mustRefetch.add((e) => got.push(['B', e.reason]));
  p.handleMustRefetch({ reason: 'one', models: ['B'] });
  p.handleMustRefetch({ reason: 'all', models: null });
  assert.deepEqual(got, [['B', 'one'], ['A', 'all'], ['B', 'all']]);
});

test('processDelta is bound (usable as a listener)', () => {
  const { array, p } = setup();
  const listener = p.processDelta;
  listener({ type: 'insert', model: 'Task', data: { id: 1 } });
  assert.equal(array.length, 1);
});
