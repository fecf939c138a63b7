// execFileHTTP: POST .../exec with the raw stdin as body; the answer is a
// stream of [type byte][payload] chunks (1 stdout, 2 stderr, 3 exit code).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ExecError } from '@fly/sprites';
import { fileSprite } from './helpers.mjs';

const NAME = 'js-exec-http';
const sprite = fileSprite(NAME);

test('execFileHTTP runs a command and returns its output', { timeout: 60_000 }, async () => {
  const r = await sprite().execFileHTTP('echo', ['hi']);
  assert.deepEqual(r, { stdout: 'hi\n', stderr: '', exitCode: 0 });
});

test('execFileHTTP passes its input as stdin and reports a failure', { timeout: 60_000 }, async () => {
  await assert.rejects(
    sprite().execFileHTTP('sh', ['-c', 'cat; echo err >&2; exit 3'], { input: 'from stdin' }),
    (e) => {
      assert.ok(e instanceof ExecError, String(e));
      assert.equal(e.exitCode, 3);
      assert.equal(e.stdout, 'from stdin');
      assert.equal(e.stderr, 'err\n');
      return true;
    },
  );
});
