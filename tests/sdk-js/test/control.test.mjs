// Control mode (`new SpritesClient(token, { controlMode: true })`): commands
// over one pooled `/control` WebSocket, and its OpConn API directly.
//
// The SDK falls back to a plain exec WebSocket on any error of the control
// path, silently, so every WebSocket the SDK opens is recorded here and the
// tests check that only control connections were opened. (Its fallback also
// catches the ExecError of a non-zero exit and runs the command again over
// exec, so exit codes other than 0 are checked through OpConn.)

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { SpritesClient } from '@fly/sprites';
import { token, url } from './helpers.mjs';

const NAME = 'js-control';
const opened = [];
const RealWebSocket = globalThis.WebSocket;
globalThis.WebSocket = class extends RealWebSocket {
  constructor(target, options) {
    opened.push(new URL(String(target)).pathname);
    super(target, options);
  }
};

const client = new SpritesClient(token, { baseURL: url, timeout: 120_000, controlMode: true });
let sprite;
before(async () => {
  sprite = await client.createSprite(NAME);
});
after(async () => {
  sprite.closeControlConnection();
  await client.deleteSprite(NAME);
  globalThis.WebSocket = RealWebSocket;
});

const controlPath = `/v1/sprites/${NAME}/control`;

test('execFile runs several commands over one control connection', { timeout: 120_000 }, async () => {
  for (let i = 0; i < 8; i++) {
    const r = await sprite.execFile('sh', ['-c', `echo out ${i}; echo err >&2`]);
    assert.deepEqual(r, { stdout: `out ${i}\n`, stderr: 'err\n', exitCode: 0 });
  }
  const r = await sprite.execFile('sh', ['-c', 'echo $PWD:$GREETING'], { cwd: '/tmp', env: { GREETING: 'hi there' } });
  assert.equal(r.stdout, '/tmp:hi there\n');
  assert.ok(sprite.hasControlConnection());
  assert.deepEqual(opened, [controlPath], 'one control connection, no exec WebSocket');
});

/** Runs `cmd` as an operation on a pooled connection; stdout, stderr, exit code. */
async function op(cmd, { tty = false, rows, cols, during } = {}) {
  const cc = await sprite.getControlConnection();
  try {
    const o = await cc.startOp('exec', { cmd, tty, rows, cols, stdin: true });
    const out = [];
    const err = [];
    o.on('stdout', (d) => out.push(Buffer.from(d)));
    o.on('stderr', (d) => err.push(Buffer.from(d)));
    const failed = new Promise((_, reject) => o.on('error', reject));
    if (during) await during(o);
    else o.sendEOF();
    const code = await Promise.race([o.wait(), failed]);
    return { code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
  } finally {
    const { releaseControlConnection } = await import('../node_modules/@fly/sprites/dist/control.js');
    releaseControlConnection(sprite, cc);
  }
}

test('OpConn: exit codes, stdin and a signal, one after another', { timeout: 120_000 }, async () => {
  assert.deepEqual(await op(['sh', '-c', 'echo o; echo e >&2; exit 3']), { code: 3, stdout: 'o\n', stderr: 'e\n' });
  assert.equal((await op(['sh', '-c', 'exit 255'])).code, 255);
  const echoed = await op(['cat'], {
    during: async (o) => {
      o.write(Buffer.from('through stdin'));
      o.sendEOF();
    },
  });
  assert.deepEqual(echoed, { code: 0, stdout: 'through stdin', stderr: '' });
  // OpConn.signal sends a binary frame of JSON.
  const killed = await op(['sleep', '600'], {
    during: async (o) => {
      await new Promise((r) => setTimeout(r, 200));
      o.signal('TERM');
    },
  });
  assert.equal(killed.code, 143);
  const missing = await op(['no-such-command-xyz']);
  assert.equal(missing.code, 127);
  assert.match(missing.stderr, /no-such-command-xyz/);
  assert.deepEqual(opened, [controlPath]);
});

test('OpConn: TTY size and a resize', { timeout: 120_000 }, async () => {
  const sized = await op(['stty', 'size'], { tty: true, rows: 33, cols: 101 });
  assert.equal(sized.code, 0);
  assert.equal(sized.stdout.trim(), '33 101');
  // The resize is applied before the line the command waits for.
  const r = await op(['sh', '-c', 'read line; stty size'], {
    tty: true,
    rows: 33,
    cols: 101,
    during: async (o) => {
      o.resize(120, 40);
      o.write(Buffer.from('go\r'));
    },
  });
  assert.equal(r.code, 0);
  assert.match(r.stdout, /40 120/);
  assert.deepEqual(opened, [controlPath]);
});
