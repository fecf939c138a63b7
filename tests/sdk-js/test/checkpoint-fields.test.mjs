// The checkpoint fields @fly/sprites reads beyond id, time and comment:
// isAuto (is_auto), sourceId (source_id), health.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { withSprite } from './helpers.mjs';

async function complete(stream) {
  const all = [];
  for await (const m of stream) all.push(m);
  assert.equal(all.at(-1)?.type, 'complete', JSON.stringify(all));
  return all.at(-1).data;
}

test('checkpoints say whether they were automatic and what they came from', { timeout: 300_000 }, async () => {
  await withSprite('js-ckpt-fields', async (sprite) => {
    const first = await complete(await sprite.createCheckpoint('base'));
    const manual = await sprite.getCheckpoint(first);
    assert.ok(!manual.isAuto);
    assert.ok(!manual.health);

    // A restore keeps the state it replaces as an automatic checkpoint; the
    // stream's last line names it.
    const kept = await complete(await sprite.restoreCheckpoint(first));
    const auto = await sprite.getCheckpoint(kept);
    assert.equal(auto.isAuto, true);

    // A checkpoint taken after restoring descends from the restored one.
    const next = await complete(await sprite.createCheckpoint('after restore'));
    const child = await sprite.getCheckpoint(next);
    assert.equal(child.sourceId, first);
    assert.ok(!child.isAuto);
    const listed = (await sprite.listCheckpoints()).find((c) => c.id === next);
    assert.equal(listed?.sourceId, first);
    assert.ok(listed && !listed.isAuto);
  });
});
