// Browser end-to-end test of the TodoMVC example: two pages of a running
// `snorky demo` stay in sync, whether a change comes from a page or from SQL.
//
// cmd/snorky's TestDemoInBrowser starts the demo and runs this file with:
//   TODOMVC_URL           the page, e.g. http://127.0.0.1:8080
//   TODOMVC_DATABASE_URL  the demo's database
//   TODOMVC_PSQL          the psql binary (default: psql on PATH)
//   TODOMVC_SCREENSHOT    where to write the screenshot (optional)
//   CHROMIUM              the browser (default /usr/bin/chromium)
// By hand: go run ./cmd/snorky demo, then
//   TODOMVC_URL=http://127.0.0.1:8080 TODOMVC_DATABASE_URL=… node --test examples/todomvc/e2e/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { chromium } from 'playwright-core';

const url = process.env.TODOMVC_URL;
const dbURL = process.env.TODOMVC_DATABASE_URL;
const psql = process.env.TODOMVC_PSQL || 'psql';
const screenshot = process.env.TODOMVC_SCREENSHOT;
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const timeout = 15000;

function sql(statement) {
  return execFileSync(psql, [dbURL, '-X', '-q', '-t', '-A', '-v', 'ON_ERROR_STOP=1', '-c', statement], {
    encoding: 'utf8',
  }).trim();
}

// item is the <li> of the task titled title.
const item = (page, title) => page.locator('.todo-list li', { has: page.locator('label', { hasText: title }) });

async function expectItem(page, title, { completed } = {}) {
  const li = item(page, title);
  await li.waitFor({ state: 'visible', timeout });
  if (completed !== undefined) {
    await page.waitForFunction(
      ([t, c]) => [...document.querySelectorAll('.todo-list li')].some(
        (li) => li.querySelector('label').textContent === t && li.classList.contains('completed') === c),
      [title, completed], { timeout });
  }
}

async function expectGone(page, title) {
  await item(page, title).waitFor({ state: 'detached', timeout });
}

async function expectCount(page, text) {
  await page.waitForFunction((want) => document.querySelector('.todo-count').textContent === want, text, { timeout });
}

async function live(page) {
  await page.locator('#status[data-state="live"]').waitFor({ timeout });
}

test('two windows stay in sync', { skip: !url || !dbURL ? 'TODOMVC_URL and TODOMVC_DATABASE_URL are not set (run cmd/snorky TestDemoInBrowser)' : false }, async (t) => {
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-dev-shm-usage'],
  });
  t.after(() => browser.close());
  const errors = [];
  const open = async (name) => {
    const context = await browser.newContext({ viewport: { width: 640, height: 560 } });
    const page = await context.newPage();
    page.on('pageerror', (e) => errors.push(`${name}: ${e.message}`));
    page.on('console', (m) => { if (m.type() === 'error') errors.push(`${name}: console: ${m.text()}`); });
    await page.goto(url);
    await live(page);
    return page;
  };
  const one = await open('page 1');
  const two = await open('page 2');

  await t.test('a task added in page 1 appears in page 2', async () => {
    await one.locator('.new-todo').fill('Buy milk');
    await one.locator('.new-todo').press('Enter');
    await expectItem(two, 'Buy milk', { completed: false });
    await expectItem(one, 'Buy milk', { completed: false });
    await expectCount(two, '1 item left');
    assert.equal(await one.locator('.new-todo').inputValue(), '');
  });

  await t.test('a task toggled in page 2 is completed in page 1', async () => {
    await item(two, 'Buy milk').locator('.toggle').check();
    await expectItem(one, 'Buy milk', { completed: true });
    await expectCount(one, '0 items left');
  });

  await t.test('a row inserted with SQL appears in both', async () => {
    sql(`INSERT INTO tasks (title) VALUES ('Inserted with SQL')`);
    await expectItem(one, 'Inserted with SQL', { completed: false });
    await expectItem(two, 'Inserted with SQL', { completed: false });
    await expectCount(one, '1 item left');
  });

  await t.test('a title edited in page 1 changes in page 2', async () => {
    await item(one, 'Buy milk').locator('label').dblclick();
    const edit = item(one, 'Buy milk').locator('.edit');
    await edit.fill('Buy oat milk');
    await edit.press('Enter');
    await expectItem(two, 'Buy oat milk', { completed: true });
    await expectGone(two, 'Buy milk');
  });

  if (screenshot) {
    mkdirSync(dirname(screenshot), { recursive: true });
    await one.screenshot({ path: screenshot });
  }

  await t.test('a task deleted in page 2 disappears from page 1', async () => {
    const li = item(two, 'Inserted with SQL');
    await li.hover();
    await li.locator('.destroy').click();
    await expectGone(one, 'Inserted with SQL');
    await expectGone(two, 'Inserted with SQL');
    assert.equal(sql(`SELECT count(*) FROM tasks WHERE title = 'Inserted with SQL'`), '0');
  });

  await t.test('after a disconnection a page fetches again and catches up', async () => {
    await two.evaluate(() => window.todomvc.disconnect());
    sql(`UPDATE tasks SET title = 'Renamed while offline' WHERE title = 'Buy oat milk'`);
    await expectItem(two, 'Renamed while offline', { completed: true });
    await live(two);
    await expectItem(one, 'Renamed while offline', { completed: true });
    // The new subscription delivers what follows, once.
    sql(`INSERT INTO tasks (title) VALUES ('After reconnecting')`);
    await expectItem(two, 'After reconnecting');
    assert.equal(await item(two, 'After reconnecting').count(), 1);
  });

  await t.test('clear completed and truncate reach both', async () => {
    await one.locator('.clear-completed').click();
    await expectGone(two, 'Renamed while offline');
    sql('TRUNCATE tasks');
    await expectGone(one, 'After reconnecting');
    await expectGone(two, 'After reconnecting');
    assert.equal(await two.locator('.footer').isHidden(), true);
  });

  assert.deepEqual(errors, []);
});
