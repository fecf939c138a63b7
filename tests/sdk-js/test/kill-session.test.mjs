// killSession(id, signal, timeout) as @fly/sprites sends it (query string) and
// the events it reads: {type, message, signal, pid, exit_code}.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fileSprite, startDetached, waitFor } from './helpers.mjs';

const NAME = 'js-kill';
const sprite = fileSprite(NAME);

async function events(stream) {
  const all = [];
  for await (const e of stream) all.push(e);
  return all;
}

async function started(argv) {
  const id = await startDetached(NAME, argv);
  await waitFor('the session to be listed', async () =>
    (await sprite().listSessions()).find((s) => s.id === id));
  return id;
}

test('the signal given is the one sent, and the events say what happened', { timeout: 120_000 }, async () => {
  const id = await started(['sh', '-c', 'trap "" TERM; sleep 600']);
  const all = await events(await sprite().killSession(id, 'SIGKILL', '30s'));
  const sent = all.find((e) => e.type === 'signal');
  assert.ok(sent, JSON.stringify(all));
  assert.equal(sent.signal, 'SIGKILL');
  assert.ok(Number.isInteger(sent.pid) && sent.pid > 0, JSON.stringify(sent));
  const exited = all.find((e) => e.type === 'exited');
  assert.ok(exited, JSON.stringify(all));
  assert.equal(exited.exitCode, 137);
  assert.equal(all.at(-1).type, 'complete');
  assert.ok(all.every((e) => e.type === 'complete' || typeof e.message === 'string'), JSON.stringify(all));
});

test('a process that ignores the signal is killed after the timeout', { timeout: 120_000 }, async () => {
  const id = await started(['sh', '-c', 'trap "" TERM; sleep 600']);
  const t0 = Date.now();
  const all = await events(await sprite().killSession(id, 'SIGTERM', '1s'));
  const types = all.map((e) => e.type);
  assert.deepEqual(types.filter((t) => t !== 'complete'), ['signal', 'timeout', 'killed', 'exited'], JSON.stringify(all));
  assert.equal(all.find((e) => e.type === 'exited').exitCode, 137);
  // The default grace period is 10 s; this asked for 1 s.
  assert.ok(Date.now() - t0 < 9_000, `took ${Date.now() - t0} ms`);
});
