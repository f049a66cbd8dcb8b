// Browser end-to-end test of the chat example: two people, each in their
// own browser context, see each other's presence, messages and cursors.
//
// examples/chat's TestChatInBrowser runs it with:
//   CHAT_URL   the page, e.g. http://127.0.0.1:8090
//   CHROMIUM   the browser (default /usr/bin/chromium)
//   CHAT_SCREENSHOT  where to write a screenshot (optional)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const url = process.env.CHAT_URL;
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const screenshot = process.env.CHAT_SCREENSHOT;
const timeout = 15000;

async function live(page) {
  await page.locator('#status[data-state="live"]').waitFor({ timeout });
}

test('two identities see each other', { skip: !url && 'CHAT_URL is not set (run examples/chat TestChatInBrowser)' }, async (t) => {
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-dev-shm-usage'],
  });
  t.after(() => browser.close());
  const errors = [];
  const enter = async (name) => {
    const context = await browser.newContext({ viewport: { width: 900, height: 600 } });
    const page = await context.newPage();
    page.on('pageerror', (e) => errors.push(`${name}: ${e.message}`));
    page.on('console', (m) => { if (m.type() === 'error') errors.push(`${name}: console: ${m.text()}`); });
    await page.goto(url);
    await page.locator('#name').fill(name);
    await page.locator('#login button').click();
    await live(page);
    return page;
  };
  const alice = await enter('alice');
  const bob = await enter('bob');

  await t.test('presence: each sees the other in the room', async () => {
    await alice.locator('#members li[data-name="bob"]').waitFor({ timeout });
    await bob.locator('#members li[data-name="alice"]').waitFor({ timeout });
    await bob.locator('#members li[data-name="bob"]').waitFor({ timeout });
    await alice.locator('#messages li.system', { hasText: 'bob joined' }).waitFor({ timeout });
  });

  await t.test('messages reach both, the sender included', async () => {
    await alice.locator('#text').fill('hello bob');
    await alice.locator('#say button').click();
    await bob.locator('#messages li[data-from="alice"]', { hasText: 'hello bob' }).waitFor({ timeout });
    await alice.locator('#messages li[data-from="alice"]', { hasText: 'hello bob' }).waitFor({ timeout });
    await bob.locator('#text').fill('hi alice');
    await bob.locator('#text').press('Enter');
    await alice.locator('#messages li[data-from="bob"]', { hasText: 'hi alice' }).waitFor({ timeout });
  });

  await t.test("cursors: each sees the other's pointer move", async () => {
    const board = await bob.locator('#board').boundingBox();
    await bob.mouse.move(board.x + 120, board.y + 60);
    await alice.waitForFunction(() => {
      const c = document.querySelector('.cursor[data-owner="bob"]');
      return c && c.dataset.x === '120' && c.dataset.y === '60';
    }, null, { timeout });
    const aboard = await alice.locator('#board').boundingBox();
    await alice.mouse.move(aboard.x + 30, aboard.y + 200);
    await bob.waitForFunction(() => {
      const c = document.querySelector('.cursor[data-owner="alice"]');
      return c && c.dataset.x === '30' && c.dataset.y === '200';
    }, null, { timeout });
    // Nobody sees their own cursor as someone else's.
    assert.equal(await alice.locator('.cursor[data-owner="alice"]').count(), 0);
    if (screenshot) await alice.screenshot({ path: screenshot });
  });

  await t.test('leaving removes presence and the cursor', async () => {
    await bob.evaluate(() => window.chat.disconnect());
    await alice.locator('#members li[data-name="bob"]').waitFor({ state: 'detached', timeout });
    await alice.locator('.cursor[data-owner="bob"]').waitFor({ state: 'detached', timeout });
    await alice.locator('#messages li.system', { hasText: 'bob left' }).waitFor({ timeout });
  });

  assert.deepEqual(errors, []);
});
