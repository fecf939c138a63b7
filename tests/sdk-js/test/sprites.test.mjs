// Create, get, list and destroy through @fly/sprites.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { APIError } from '@fly/sprites';
import { client } from './helpers.mjs';

test('create, get, list and destroy a sprite', { timeout: 120_000 }, async () => {
  const c = client();
  const created = await c.createSprite('js-life', { labels: ['js'] });
  try {
    assert.equal(created.name, 'js-life');
    assert.equal(created.status, 'running');
    assert.deepEqual(created.labels, ['js']);
    assert.ok(created.createdAt instanceof Date && !Number.isNaN(created.createdAt.getTime()));

    const got = await c.getSprite('js-life');
    assert.equal(got.id, created.id);

    const page = await c.listSprites({ prefix: 'js-li' });
    assert.deepEqual(page.sprites.map((s) => s.name), ['js-life']);
    assert.equal(page.hasMore, false);
    const all = await c.listAllSprites('js-');
    assert.ok(all.some((s) => s.name === 'js-life'));
  } finally {
    await c.deleteSprite('js-life');
  }
  await assert.rejects(c.getSprite('js-life'), (e) => e instanceof APIError && e.statusCode === 404);
});

test('a taken name is a 409 APIError', { timeout: 120_000 }, async () => {
  const c = client();
  await c.createSprite('js-dup');
  try {
    await assert.rejects(c.createSprite('js-dup'), (e) => e instanceof APIError && e.statusCode === 409);
  } finally {
    await c.deleteSprite('js-dup');
  }
});
