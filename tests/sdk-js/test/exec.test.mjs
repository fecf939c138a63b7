// Commands over the exec WebSocket: output, exit codes, stdin, signals, TTY.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { ExecError } from '@fly/sprites';
import { fileSprite, readAll, spawned } from './helpers.mjs';

const NAME = 'js-exec';
const sprite = fileSprite(NAME);

test('execFile returns stdout, stderr and exit code 0', { timeout: 60_000 }, async () => {
  const r = await sprite().execFile('sh', ['-c', 'echo out; echo err >&2']);
  assert.deepEqual(r, { stdout: 'out\n', stderr: 'err\n', exitCode: 0 });
  const e = await sprite().exec('echo hello world');
  assert.equal(e.stdout, 'hello world\n');
});

test('a non-zero exit rejects with ExecError and both streams', { timeout: 60_000 }, async () => {
  await assert.rejects(sprite().execFile('sh', ['-c', 'echo out; echo err >&2; exit 3']), (e) => {
    assert.ok(e instanceof ExecError);
    assert.equal(e.exitCode, 3);
    assert.equal(e.stdout, 'out\n');
    assert.equal(e.stderr, 'err\n');
    return true;
  });
});

test('env and cwd reach the command', { timeout: 60_000 }, async () => {
  const r = await sprite().execFile('sh', ['-c', 'echo $PWD:$GREETING'], { cwd: '/tmp', env: { GREETING: 'hi there' } });
  assert.equal(r.stdout, '/tmp:hi there\n');
});

async function sha256OfStdin(data) {
  const cmd = sprite().spawn('sha256sum', []);
  await spawned(cmd);
  const out = readAll(cmd.stdout);
  // One write is one WebSocket message, however large.
  cmd.stdin.write(data);
  cmd.stdin.end();
  const code = await cmd.wait();
  return { code, sum: (await out).toString().split(' ')[0] };
}

for (const size of [(1 << 20) + 1, 16 << 20]) {
  test(`one stdin write of ${size} bytes arrives whole`, { timeout: 120_000 }, async () => {
    const data = Buffer.alloc(size);
    for (let i = 0; i < size; i++) data[i] = i % 251;
    const { code, sum } = await sha256OfStdin(data);
    assert.equal(code, 0);
    assert.equal(sum, createHash('sha256').update(data).digest('hex'));
  });
}

test('kill() ends a running command', { timeout: 60_000 }, async () => {
  const cmd = sprite().spawn('sleep', ['600']);
  await spawned(cmd);
  cmd.kill();
  // 128 + SIGTERM, as a shell reports a command ended by a signal.
  assert.equal(await cmd.wait(), 143);
});

test('signal() reaches a TTY command', { timeout: 60_000 }, async () => {
  const cmd = sprite().spawn('sh', ['-c', 'echo ready; exec sleep 600'], { tty: true });
  await spawned(cmd);
  const out = [];
  await new Promise((resolve) => {
    cmd.stdout.on('data', (d) => {
      out.push(d);
      if (Buffer.concat(out).includes('ready')) resolve();
    });
  });
  cmd.signal('KILL');
  assert.notEqual(await cmd.wait(), 0);
});

test('a TTY command reports its exit code', { timeout: 60_000 }, async () => {
  const failing = sprite().spawn('sh', ['-c', 'exit 4'], { tty: true });
  const exitMessages = [];
  failing.on('message', (m) => {
    if (m?.type === 'exit') exitMessages.push(m.exit_code);
  });
  // The SDK takes a TTY command's exit code from the close frame alone.
  assert.notEqual(await failing.wait(), 0);
  assert.deepEqual(exitMessages, [4]);

  const ok = sprite().spawn('sh', ['-c', 'exit 0'], { tty: true });
  assert.equal(await ok.wait(), 0);
});

test('a TTY command gets a terminal of the requested size', { timeout: 60_000 }, async () => {
  const cmd = sprite().spawn('stty', ['size'], { tty: true, rows: 33, cols: 101 });
  const out = readAll(cmd.stdout);
  assert.equal(await cmd.wait(), 0);
  assert.equal((await out).toString().trim(), '33 101');
});

test('a command that does not exist exits 127', { timeout: 60_000 }, async () => {
  await assert.rejects(sprite().execFile('no-such-command-xyz', []), (e) => {
    assert.ok(e instanceof ExecError);
    assert.equal(e.exitCode, 127);
    assert.match(e.stderr, /not found/);
    return true;
  });
});
