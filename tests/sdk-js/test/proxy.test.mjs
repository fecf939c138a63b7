// Port forwarding through @fly/sprites, unchanged: watchPorts sees a web
// server start in the sprite, proxyPort serves it on a local port.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { withSprite } from './helpers.mjs';

async function nextWith(watcher, what, pred) {
  for (;;) {
    const e = await watcher.next();
    assert.ok(e, `the port watch ended before ${what}`);
    if (pred(e)) return e;
  }
}

test('watchPorts sees the web server, proxyPort reaches it', { timeout: 180_000 }, async () => {
  await withSprite('js-proxy', async (sprite) => {
    const watcher = await sprite.watchPorts();
    try {
      const list = await watcher.next();
      assert.equal(list?.type, 'port_list', JSON.stringify(list));
      assert.ok(Array.isArray(list.ports));
      assert.ok(!list.ports.some((p) => p.port === 8080), JSON.stringify(list));

      for await (const _ of await sprite.createService('web', {
        cmd: 'python3',
        args: ['-m', 'http.server', '8080', '--bind', '127.0.0.1', '--directory', '/etc'],
      })) {
        // The creation's log stream; the watch says when it listens.
      }
      const opened = await nextWith(watcher, 'port 8080 opened', (e) => e.port === 8080);
      assert.equal(opened.type, 'port_opened', JSON.stringify(opened));
      assert.equal(opened.address, '127.0.0.1');
      assert.ok(opened.pid > 0, JSON.stringify(opened));
    } finally {
      watcher.close();
    }

    const session = await sprite.proxyPort(0, 8080);
    try {
      const port = Number(session.localAddr().split(':').pop());
      assert.ok(port > 0, session.localAddr());
      const res = await fetch(`http://localhost:${port}/hostname`);
      assert.equal(res.status, 200);
      assert.equal((await res.text()).trim(), 'js-proxy');
    } finally {
      session.close();
    }
  });
});
