// The TodoMVC page survives a restart of the Snorky server without a
// reload: run by examples/todomvc TestPageSurvivesRestart, which builds the
// server and writes its configuration; this script starts, kills and
// restarts it. Environment: TODOMVC_URL, TODOMVC_DATABASE_URL, TODOMVC_PSQL,
// TODOMVC_SNORKY (the binary), TODOMVC_SNORKY_CONFIG, TODOMVC_SNORKY_READY
// (the backend's /readyz), CHROMIUM.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { chromium } from 'playwright-core';

const env = process.env;
const skip = !env.TODOMVC_URL || !env.TODOMVC_SNORKY ? 'run by examples/todomvc TestPageSurvivesRestart' : false;
const timeout = 20000;

function sql(statement) {
  return execFileSync(env.TODOMVC_PSQL || 'psql', [env.TODOMVC_DATABASE_URL, '-X', '-q', '-t', '-A', '-v', 'ON_ERROR_STOP=1', '-c', statement], { encoding: 'utf8' }).trim();
}

async function startServer() {
  const proc = spawn(env.TODOMVC_SNORKY, ['serve', '--config', env.TODOMVC_SNORKY_CONFIG], { stdio: 'inherit' });
  const exited = new Promise((r) => proc.on('exit', r));
  const end = Date.now() + timeout;
  for (;;) {
    try {
      if ((await fetch(env.TODOMVC_SNORKY_READY)).status === 200) break;
    } catch (e) {
      // not listening yet
    }
    if (Date.now() > end || proc.exitCode !== null) throw new Error('the server did not become ready');
    await new Promise((r) => setTimeout(r, 100));
  }
  return { stop: async (signal) => { proc.kill(signal); await exited; } };
}

const label = (page, title) => page.locator('.todo-list li label', { hasText: title });

test('the page survives a server restart without a reload', { skip }, async (t) => {
  let server = await startServer();
  t.after(() => server.stop('SIGTERM'));
  const browser = await chromium.launch({
    executablePath: env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-dev-shm-usage'],
  });
  t.after(() => browser.close());
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(env.TODOMVC_URL);
  await page.locator('#status[data-state="live"]').waitFor({ timeout });
  await page.evaluate(() => { window.notReloaded = true; });
  sql(`INSERT INTO tasks (title) VALUES ('before the restart')`);
  await label(page, 'before the restart').waitFor({ timeout });

  await server.stop('SIGKILL');
  await page.locator('#status[data-state="reconnecting"]').waitFor({ timeout });
  sql(`INSERT INTO tasks (title) VALUES ('while the server was down')`);
  sql(`UPDATE tasks SET completed = true WHERE title = 'before the restart'`);
  server = await startServer();
  await page.locator('#status[data-state="live"]').waitFor({ timeout });
  await label(page, 'while the server was down').waitFor({ timeout });
  await page.locator('.todo-list li.completed label', { hasText: 'before the restart' }).waitFor({ timeout });
  sql(`INSERT INTO tasks (title) VALUES ('after the restart')`);
  await label(page, 'after the restart').waitFor({ timeout });
  assert.equal(await page.evaluate(() => window.notReloaded), true, 'the page was reloaded');
  assert.deepEqual(errors, []);
});
