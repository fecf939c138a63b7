// Sessions outlive their connection: list, attach, kill.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fileSprite, readAll, startDetached, waitFor } from './helpers.mjs';

const NAME = 'js-sessions';
const sprite = fileSprite(NAME);

async function listed(id) {
  return (await sprite().listSessions()).find((s) => s.id === id);
}

test('a detached session is listed and attaching replays its output and exit', { timeout: 120_000 }, async () => {
  const id = await startDetached(NAME, ['sh', '-c', 'sleep 1; echo js-attach-marker; exit 5']);
  const session = await waitFor('the detached session to be listed', async () => listed(id));
  assert.match(session.command, /js-attach-marker/);
  assert.equal(session.tty, false);
  assert.ok(session.created instanceof Date && !Number.isNaN(session.created.getTime()));

  const cmd = sprite().attachSession(id);
  const out = readAll(cmd.stdout);
  assert.equal(await cmd.wait(), 5);
  assert.equal((await out).toString(), 'js-attach-marker\n');
});

test('attaching to a TTY session gets the terminal and its exit', { timeout: 120_000 }, async () => {
  const id = await startDetached(NAME, ['sh', '-c', 'read line; echo "got:$line"; exit 6'], { tty: true });
  await waitFor('the TTY session to be listed', async () => (await listed(id))?.tty ? true : undefined);
  const cmd = sprite().attachSession(id);
  const chunks = [];
  cmd.stdout.on('data', (d) => chunks.push(d));
  await new Promise((resolve, reject) => {
    cmd.once('spawn', resolve);
    cmd.once('error', reject);
  });
  cmd.stdin.write('hello\r');
  assert.notEqual(await cmd.wait(), 0);
  assert.match(Buffer.concat(chunks).toString(), /got:hello/);
});

test('killSession ends a running session', { timeout: 120_000 }, async () => {
  const id = await startDetached(NAME, ['sh', '-c', 'sleep 600 # js-kill-me']);
  await waitFor('the session to be listed', async () => listed(id));
  const stream = await sprite().killSession(id);
  const events = [];
  for await (const e of stream) events.push(e);
  assert.ok(events.length > 0, 'kill answers with a progress stream');
  assert.equal(events.at(-1).type, 'complete', JSON.stringify(events));
  // The session ended by the signal: attaching collects its exit status.
  assert.equal(await sprite().attachSession(id).wait(), 143);
});
