// Browser tests in headless Chromium (playwright-core, Debian's chromium):
// pages load /snorky.js from the real server and talk to it over WebSocket,
// or over SockJS with window.WebSocket removed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { Server, skip as serverSkip, sql, eventually, sleep, env, freePort } from '../integration/harness.mjs';
import { startApp } from './app.mjs';

const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const skip = serverSkip || (!process.env.CHROMIUM ? 'CHROMIUM is not set (run go test ./wsapi/client)' : false);
const timeout = 20000;

let server;
let app;
let browser;
const errors = [];

before(async () => {
  if (skip) return;
  const { chromium } = await import('playwright-core');
  server = await new Server({ table: 'browser_items' }).init();
  await server.start();
  app = await startApp(server);
  browser = await chromium.launch({
    executablePath,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-dev-shm-usage'],
  });
});

after(async () => {
  if (browser) await browser.close();
  if (app) await app.close();
  if (server) await server.close();
});

// open loads a page; with sockjs, window.WebSocket is removed first.
async function open(path, { sockjs = false, name = path } = {}) {
  const context = await browser.newContext();
  if (sockjs) {
    await context.addInitScript(() => {
      delete window.WebSocket;
      window.WebSocket = undefined;
    });
  }
  const page = await context.newPage();
  page.on('pageerror', (e) => errors.push(`${name}: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`${name}: console: ${m.text()}`);
  });
  await page.goto(app.url + path);
  return page;
}

async function renderedList(page) {
  return page.evaluate(() => [...document.querySelectorAll('#items li')].map((li) => li.textContent));
}

function tableList() {
  return server.rows().map((r) => `${r.title} ${r.n}`);
}

async function expectListEqualsTable(page, what) {
  await eventually(async () => JSON.stringify(await renderedList(page)) === JSON.stringify(tableList()), { timeout, what });
}

for (const sockjs of [false, true]) {
  const via = sockjs ? ' over SockJS without WebSocket' : '';

  test(`PubSub between two pages (the original README page)${via}`, { skip }, async () => {
    const one = await open('/pubsub.html', { sockjs, name: 'pubsub 1' });
    const two = await open('/pubsub.html', { sockjs, name: 'pubsub 2' });
    for (const p of [one, two]) {
      await p.waitForFunction(() => window.SUBSCRIBED === true, null, { timeout });
      assert.equal(await p.evaluate(() => window.TRANSPORT), sockjs ? 'sockjs' : 'websocket');
    }
    await one.fill('#message', 'hello from one');
    await one.click('button');
    await two.locator('#messages li', { hasText: 'hello from one' }).waitFor({ timeout });
    await one.locator('#messages li', { hasText: 'hello from one' }).waitFor({ timeout });
    await server.call('pubsub_backend', 'publish', { channel: 'messages', message: 'from the backend' });
    await two.locator('#messages li', { hasText: 'from the backend' }).waitFor({ timeout });
    await one.context().close();
    await two.context().close();
  });

  test(`DataSync deltas reach an ArrayCollection rendered in the page${via}`, { skip }, async () => {
    sql(`DELETE FROM ${server.table}; INSERT INTO ${server.table} (title) VALUES ('first'), ('second')`);
    const page = await open('/datasync.html', { sockjs, name: 'datasync' });
    await page.locator('#state[data-state="open"]').waitFor({ timeout });
    await expectListEqualsTable(page, 'the initial list');
    sql(`INSERT INTO ${server.table} (title) VALUES ('third')`);
    sql(`UPDATE ${server.table} SET n = 5 WHERE title = 'first'`);
    sql(`DELETE FROM ${server.table} WHERE title = 'second'`);
    await expectListEqualsTable(page, 'the list after insert, update and delete');
    assert.deepEqual(await renderedList(page), ['first 5', 'third 0']);
    await page.context().close();
  });
}

for (const sockjs of [false, true]) {
  test(`the page reconnects by itself after the server restarts, and its list equals the table${sockjs ? ' over SockJS without WebSocket' : ''}`, { skip }, async () => {
    sql(`DELETE FROM ${server.table}; INSERT INTO ${server.table} (title) VALUES ('a'), ('b')`);
    const page = await open('/datasync.html', { sockjs, name: 'restart' });
    await page.locator('#state[data-state="open"]').waitFor({ timeout });
    await expectListEqualsTable(page, 'the initial list');
    const pageID = await page.evaluate(() => window.PAGE_ID);
    await server.stop('SIGKILL');
    await page.locator('#state[data-state="reconnecting"]').waitFor({ timeout });
    sql(`INSERT INTO ${server.table} (title) VALUES ('while down'); UPDATE ${server.table} SET n = 1 WHERE title = 'a'`);
    await server.start();
    await page.locator('#state[data-state="open"]').waitFor({ timeout });
    sql(`INSERT INTO ${server.table} (title) VALUES ('after')`);
    await expectListEqualsTable(page, 'the list after the restart');
    assert.equal(await page.evaluate(() => window.PAGE_ID), pageID, 'the page was not reloaded');
    await page.context().close();
  });

  test(`a page written against the original client API runs unchanged${sockjs ? ' over SockJS without WebSocket' : ''}`, { skip }, async () => {
    sql(`DELETE FROM ${server.table}; INSERT INTO ${server.table} (title) VALUES ('old')`);
    const page = await open('/compat.html', { sockjs, name: 'compat' });
    await page.waitForFunction(() => window.ACQUIRED === true, null, { timeout });
    sql(`INSERT INTO ${server.table} (title) VALUES ('new')`);
    await page.locator('#tasks li', { hasText: 'new' }).waitFor({ timeout });
    const state = await eventually(async () => {
      const s = await page.evaluate(() => window.compatState());
      return s.shouts.length === 1 && s.log.includes('dm:{"a":2,"b":1}') ? s : null;
    }, { timeout, what: 'the compat page to finish' });
    assert.deepEqual(state.shouts, ['HI']);
    assert.equal(state.log[0], 'connected');
    assert.equal(state.tasks, 2);
    assert.equal(state.seen, 1, 'transformItem applied to the inserted item');
    await page.context().close();
  });
}

test('the ES module /snorky.mjs loads from another origin (CORS)', { skip }, async () => {
  const page = await open('/esm.html', { name: 'esm' });
  await page.waitForFunction(() => window.ESM_RESULT, null, { timeout });
  assert.equal(await page.evaluate(() => window.ESM_RESULT), '{"a":1,"b":2}');
  await page.context().close();
});

test('examples/pubsub: the original README page, served by the server with the example config', { skip }, async (t) => {
  const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..');
  const front = await freePort();
  const back = await freePort();
  const proc = spawn(env.bin, ['serve', '--config', 'examples/pubsub/snorky.yaml'], {
    cwd: root,
    env: { ...process.env, SNORKY_FRONTEND__LISTEN: `127.0.0.1:${front}`, SNORKY_BACKEND__LISTEN: `127.0.0.1:${back}` },
    stdio: 'ignore',
  });
  const exited = new Promise((r) => proc.on('exit', r));
  t.after(async () => {
    proc.kill('SIGTERM');
    await exited;
  });
  const url = `http://127.0.0.1:${front}/`;
  await eventually(async () => (await fetch(url)).status === 200, { what: 'the example server' });
  const pages = [];
  for (const name of ['example 1', 'example 2']) {
    const context = await browser.newContext();
    const page = await context.newPage();
    page.on('pageerror', (e) => errors.push(`${name}: ${e.message}`));
    await page.goto(url);
    await page.locator('body[data-subscribed="true"]').waitFor({ timeout });
    pages.push(page);
  }
  await pages[0].fill('#message', 'hello, example');
  await pages[0].click('button');
  await pages[1].locator('#messages li', { hasText: 'hello, example' }).waitFor({ timeout });
  for (const p of pages) await p.context().close();
});

test('no page logged an error', { skip }, async () => {
  await sleep(100);
  // Network errors while the server is down are expected; nothing else is.
  assert.deepEqual(errors.filter((e) => !/WebSocket connection to .* failed|net::ERR_|Failed to load resource/.test(e)), []);
});
