// restart(), check() and upgrade() as @fly/sprites calls them.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fileSprite } from './helpers.mjs';

const NAME = 'js-lifecycle';
const sprite = fileSprite(NAME);

test('check() reports the sprite and when it was checked', { timeout: 60_000 }, async () => {
  const check = await sprite().check();
  assert.equal(check.spriteName, NAME);
  assert.equal(check.spriteId, sprite().id);
  assert.equal(typeof check.status, 'string');
  assert.ok(check.status.length > 0);
  assert.ok(!Number.isNaN(check.checkedAt.getTime()), 'checked_at is a timestamp');
});

test('restart() restarts the processes and keeps the disk', { timeout: 180_000 }, async () => {
  await sprite().execFile('sh', ['-c', 'echo kept > /root/restart-marker']);
  const r = await sprite().restart();
  assert.equal(r.spriteName, NAME);
  assert.equal(typeof r.machineId, 'string');
  assert.ok(r.machineId.length > 0);
  assert.equal(typeof r.message, 'string');
  const after = await sprite().execFile('cat', ['/root/restart-marker']);
  assert.equal(after.stdout, 'kept\n');
});

test('upgrade() succeeds', { timeout: 120_000 }, async () => {
  await sprite().upgrade();
  const r = await sprite().execFile('true', []);
  assert.equal(r.exitCode, 0);
});
