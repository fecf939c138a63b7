// Shared by the test files: the daemon under test comes from the environment
// (tests/sdk/test_sdk_js.py starts it and runs `node --test` on each file).

import assert from 'node:assert/strict';
import { after, before } from 'node:test';
import { SpritesClient } from '@fly/sprites';

export const url = process.env.BOTHY_URL;
export const token = process.env.BOTHY_TOKEN;
assert.ok(url && token, 'BOTHY_URL and BOTHY_TOKEN name the daemon under test');

export function client() {
  return new SpritesClient(token, { baseURL: url, timeout: 120_000 });
}

/** A sprite for one test file: created before, destroyed after. */
export async function withSprite(name, fn) {
  const c = client();
  const sprite = await c.createSprite(name);
  try {
    return await fn(sprite, c);
  } finally {
    await c.deleteSprite(name);
  }
}

/**
 * A sprite for the tests of one file: created before the first, destroyed
 * after the last. Returns a function that gives the sprite.
 */
export function fileSprite(name) {
  let sprite;
  before(async () => {
    sprite = await client().createSprite(name);
  });
  after(async () => {
    await client().deleteSprite(name);
  });
  return () => sprite;
}

/** Polls `check` until it returns something other than undefined. */
export async function waitFor(what, check, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Resolves once `cmd` is connected (its `spawn` event). */
export function spawned(cmd) {
  return new Promise((resolve, reject) => {
    cmd.once('spawn', resolve);
    cmd.once('error', reject);
  });
}

/** Everything `stream` gives until it ends, as one Buffer. */
export async function readAll(stream) {
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  return Buffer.concat(chunks);
}

/**
 * Starts `argv` over the exec WebSocket the way a client that then goes away
 * does: reads session_info, closes. Returns the session id.
 */
export async function startDetached(spriteName, argv, { tty = false } = {}) {
  const wsURL = new URL(`${url.replace(/^http/, 'ws')}/v1/sprites/${encodeURIComponent(spriteName)}/exec`);
  for (const a of argv) wsURL.searchParams.append('cmd', a);
  wsURL.searchParams.set('path', argv[0]);
  wsURL.searchParams.set('stdin', 'true');
  if (tty) wsURL.searchParams.set('tty', 'true');
  const ws = new WebSocket(wsURL, { headers: { Authorization: `Bearer ${token}` } });
  const info = await new Promise((resolve, reject) => {
    ws.addEventListener('message', (e) => {
      if (typeof e.data === 'string') resolve(JSON.parse(e.data));
    });
    ws.addEventListener('error', (e) => reject(new Error(`exec WebSocket failed: ${e.message ?? e}`)));
  });
  assert.equal(info.type, 'session_info');
  ws.close();
  return String(info.session_id);
}
