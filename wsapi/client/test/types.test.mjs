// snorky.d.ts compiles, and an app written against it type-checks
// (tsc --noEmit, typescript from devDependencies).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');

test('tsc --noEmit accepts snorky.d.ts and test/types/usage.ts', { skip: existsSync(tsc) ? false : 'typescript not installed: npm ci --prefix wsapi/client' }, () => {
  let out = '';
  try {
    out = execFileSync(process.execPath, [tsc, '--noEmit', '-p', join(root, 'test', 'types', 'tsconfig.json')], { encoding: 'utf8' });
  } catch (e) {
    assert.fail(`tsc failed:\n${e.stdout}${e.stderr}`);
  }
  assert.equal(out.trim(), '');
});
