// Checkpoint create, list, get and restore through @fly/sprites.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { withSprite } from './helpers.mjs';

async function messages(stream) {
  const all = [];
  for await (const m of stream) all.push(m);
  return all;
}

test('create, list, get and restore a checkpoint', { timeout: 300_000 }, async () => {
  await withSprite('js-ckpt', async (sprite) => {
    await sprite.execFile('sh', ['-c', 'echo one > /root/state']);
    const made = await messages(await sprite.createCheckpoint('js first'));
    const last = made.at(-1);
    assert.equal(last.type, 'complete', JSON.stringify(made));
    const id = last.data;
    assert.match(id, /^v\d+$/);

    const listed = await sprite.listCheckpoints();
    const cp = listed.find((c) => c.id === id);
    assert.ok(cp, JSON.stringify(listed));
    assert.equal(cp.comment, 'js first');
    assert.ok(cp.createTime instanceof Date && !Number.isNaN(cp.createTime.getTime()));
    assert.ok(!cp.health, `a fresh checkpoint is healthy: ${cp.health}`);

    const got = await sprite.getCheckpoint(id);
    assert.equal(got.id, id);
    assert.equal(got.comment, 'js first');
    await assert.rejects(sprite.getCheckpoint('v999'), /not found/i);

    await sprite.execFile('sh', ['-c', 'echo two > /root/state']);
    const restored = await messages(await sprite.restoreCheckpoint(id));
    assert.equal(restored.at(-1).type, 'complete', JSON.stringify(restored));
    const after = await sprite.execFile('cat', ['/root/state']);
    assert.equal(after.stdout, 'one\n');
  });
});
