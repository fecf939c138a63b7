// watchSprites: GET /v1/sprites with Accept: application/x-ndjson. Either a
// stream of sprite state events, or a clear 406 the SDK turns into an APIError.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { APIError } from '@fly/sprites';
import { client, withSprite } from './helpers.mjs';

test('watchSprites streams the state of the sprites, or says 406', { timeout: 120_000 }, async () => {
  await withSprite('js-watch', async () => {
    let stream;
    try {
      stream = await client().watchSprites({ prefix: 'js-watch' });
    } catch (e) {
      assert.ok(e instanceof APIError, String(e));
      assert.equal(e.statusCode, 406);
      assert.ok(e.message.length > 0);
      return;
    }
    try {
      const first = await stream.next();
      assert.ok(first, 'the stream gives at least one event');
      assert.equal(first.name, 'js-watch', JSON.stringify(first));
      assert.equal(first.status, 'running');
      assert.ok(first.organization.running >= 1, JSON.stringify(first));
    } finally {
      stream.close();
    }
  });
});
