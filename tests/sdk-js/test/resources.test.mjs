// The resources policy through @fly/sprites: a box's memory limit changed
// while it runs.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { withSprite } from './helpers.mjs';

test('the memory limit is set, read and cleared', { timeout: 300_000 }, async () => {
  await withSprite('js-resources', async (sprite) => {
    const none = await sprite.getResourcesPolicy();
    assert.equal(none.memory, undefined);

    await sprite.updateResourcesPolicy({ memory: { limitMB: 768 } });
    const set = await sprite.getResourcesPolicy();
    assert.equal(set.memory?.limitMB, 768);
    assert.equal(set.memory?.autoscale, false);
    const inside = await sprite.execFile('sh', [
      '-c',
      'cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max',
    ]);
    assert.equal(inside.stdout.trim(), String(768 * 1024 * 1024));

    await assert.rejects(sprite.updateResourcesPolicy({ memory: { limitMB: 1 } }), /400/);
    await sprite.deleteResourcesPolicy();
    assert.equal((await sprite.getResourcesPolicy()).memory, undefined);
  });
});
