// Services through @fly/sprites, unchanged: create with its log stream, list
// and get with state, restart, logs (last lines, then follow), signal, stop,
// the HTTP port's one owner, delete.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { withSprite } from './helpers.mjs';

async function events(stream) {
  const all = [];
  for await (const e of stream) all.push(e);
  return all;
}

test('services run, restart, log, stop and go', { timeout: 300_000 }, async () => {
  await withSprite('js-services', async (sprite) => {
    const made = await events(
      await sprite.createService(
        'greeter',
        { cmd: 'sh', args: ['-c', 'echo hello $WHO; exec sleep 1000'], env: { WHO: 'js' }, httpPort: 8080 },
        '2s',
      ),
    );
    assert.equal(made[0]?.type, 'started', JSON.stringify(made));
    assert.equal(made.at(-1)?.type, 'complete');
    assert.ok(made.at(-1).logFiles, 'the end names the log');
    assert.ok(made.some((e) => e.type === 'stdout' && e.data.includes('hello js')), JSON.stringify(made));

    const listed = await sprite.listServices();
    assert.deepEqual(listed.map((s) => s.name), ['greeter']);
    const got = await sprite.getService('greeter');
    assert.equal(got.httpPort, 8080);
    assert.equal(got.state.status, 'running');
    const firstStart = got.state.startedAt;

    await assert.rejects(
      sprite.createService('other', { cmd: 'sleep', args: ['1000'], httpPort: 8080 }),
      /conflict/i,
    );

    await events(await sprite.restartService('greeter', '1s'));
    const again = await sprite.getService('greeter');
    assert.equal(again.state.status, 'running');
    assert.notEqual(again.state.startedAt, firstStart);

    const log = await events(await sprite.getServiceLogs('greeter', { lines: 1 }));
    const lines = log.filter((e) => e.type === 'stdout');
    assert.equal(lines.length, 1, JSON.stringify(log));
    assert.match(lines[0].data, /hello js/);

    await sprite.signalService('greeter', 'SIGCONT');
    const stopped = await events(await sprite.stopService('greeter', '5s'));
    assert.ok(stopped.some((e) => e.type === 'stopped'), JSON.stringify(stopped));
    assert.equal((await sprite.getService('greeter')).state.status, 'stopped');

    await sprite.deleteService('greeter');
    assert.deepEqual(await sprite.listServices(), []);
  });
});
