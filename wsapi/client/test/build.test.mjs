// The committed snorky.js and snorky.mjs are what build.mjs makes from
// src/snorky.js (run `npm run build` after editing the source).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import vm from 'node:vm';
import { build } from '../build.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

test('the built files are current', () => {
  for (const [name, text] of Object.entries(build())) {
    assert.ok(readFileSync(join(root, name), 'utf8') === text, `${name} is stale: run npm run build in wsapi/client`);
  }
});

test('as a classic script, snorky.js defines the globals Snorky, stableStringify and CycleError', () => {
  const context = vm.createContext({ console });
  context.self = context;
  vm.runInContext(readFileSync(join(root, 'snorky.js'), 'utf8'), context);
  assert.equal(typeof context.Snorky, 'function');
  assert.equal(typeof context.Snorky.DataSync.ArrayCollection, 'function');
  assert.equal(context.stableStringify({ b: 1, a: 2 }), '{"a":2,"b":1}');
  assert.equal(typeof context.CycleError, 'function');
});

test('package.json exports: import and require of snorky-client', async () => {
  const { createRequire } = await import('node:module');
  const esm = await import('snorky-client');
  const cjs = createRequire(import.meta.url)('snorky-client');
  assert.equal(typeof esm.default, 'function');
  assert.equal(typeof esm.stableStringify, 'function');
  assert.equal(typeof cjs, 'function');
  assert.equal(cjs.VERSION, esm.default.VERSION);
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
  assert.equal(pkg.exports['./backend'], './backend/index.mjs');
  assert.deepEqual(pkg.dependencies, undefined, 'no runtime dependency');
});
