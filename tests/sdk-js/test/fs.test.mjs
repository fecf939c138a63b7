// The filesystem through @fly/sprites: sprite.filesystem() reads, writes,
// lists, stats, makes directories (the SDK writes and deletes `dir/.keep`),
// renames, copies, chmods and removes, fails with the errno codes, and
// watches a tree over the fs/watch WebSocket.
//
// Listing a directory answers its children, so stat() of a directory
// describes its first child (see README): directories are checked through
// their parent's readdir({withFileTypes}) here.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { FilesystemError } from '@fly/sprites';
import { fileSprite, waitFor } from './helpers.mjs';

const NAME = 'js-fs';
const sprite = fileSprite(NAME);

/** A fresh working directory for one test, and its filesystem. */
async function freshFs(dir) {
  await sprite().execFile('sh', ['-c', `rm -rf ${dir} && mkdir -p ${dir}`]);
  return sprite().filesystem(dir);
}

async function sh(script) {
  return (await sprite().execFile('sh', ['-c', script])).stdout;
}

/** Asserts `promise` rejects with a FilesystemError of `code`. */
async function rejectsWith(promise, code) {
  await assert.rejects(promise, (e) => {
    assert.ok(e instanceof FilesystemError, String(e));
    assert.equal(e.code, code, e.message);
    return true;
  });
}

test('writeFile and readFile, text and bytes', { timeout: 120_000 }, async () => {
  const fs = await freshFs('/srv/rw');
  await fs.writeFile('hello.txt', 'héllo, bothy\n');
  assert.equal(await fs.readFile('hello.txt', 'utf8'), 'héllo, bothy\n');
  assert.equal(await sh('cat /srv/rw/hello.txt'), 'héllo, bothy\n');
  const data = randomBytes(3 << 20);
  await fs.writeFile('deep/er/blob.bin', data, { mode: 0o600 });
  const back = await fs.readFile('/srv/rw/deep/er/blob.bin');
  assert.ok(Buffer.isBuffer(back));
  assert.ok(back.equals(data), 'the bytes come back as written');
  const st = await fs.stat('deep/er/blob.bin');
  assert.equal(st.size, data.length);
  assert.equal(st.mode, 0o600);
  assert.ok(st.isFile() && !st.isDirectory() && !st.isSymbolicLink());
  assert.ok(st.mtime instanceof Date && !Number.isNaN(st.mtime.getTime()));
  assert.ok(Math.abs(Date.now() - st.mtime.getTime()) < 10 * 60_000, String(st.mtime));
  assert.equal(await fs.exists('hello.txt'), true);
  assert.equal(await fs.exists('nope'), false);
  await fs.writeJSON('c.json', { a: 1 });
  assert.deepEqual(await fs.readJSON('c.json'), { a: 1 });
  await fs.appendFile('c.json', '\n');
  assert.equal(await fs.readFile('c.json', 'utf8'), '{"a":1}\n');
});

test('readdir, with file types and recursive', { timeout: 120_000 }, async () => {
  const fs = await freshFs('/srv/ls');
  await fs.writeFile('b.txt', 'b');
  await fs.writeFile('a.txt', 'a');
  await fs.writeFile('sub/inner.txt', 'inner');
  await sh('ln -s a.txt /srv/ls/link');
  assert.deepEqual(await fs.readdir('.'), ['a.txt', 'b.txt', 'link', 'sub']);
  const dirents = await fs.readdir('/srv/ls', { withFileTypes: true });
  const kinds = Object.fromEntries(
    dirents.map((d) => [d.name, d.isDirectory() ? 'dir' : d.isSymbolicLink() ? 'link' : d.isFile() ? 'file' : '?']),
  );
  assert.deepEqual(kinds, { 'a.txt': 'file', 'b.txt': 'file', link: 'link', sub: 'dir' });
  assert.equal(dirents[0].parentPath, '/srv/ls');
  assert.deepEqual(await fs.readdir('.', { recursive: true, pattern: '*.txt' }), ['a.txt', 'b.txt', 'sub/inner.txt']);
  await rejectsWith(fs.readdir('missing'), 'ENOENT');
});

test('mkdir, one level and recursive', { timeout: 120_000 }, async () => {
  const fs = await freshFs('/srv/mk');
  await fs.mkdir('one');
  assert.equal(await sh('stat -c %F:%U:%a /srv/mk/one && ls -A /srv/mk/one'), 'directory:root:755\n');
  await rejectsWith(fs.mkdir('a/b'), 'ENOENT');
  assert.equal(await sh('test -e /srv/mk/a || echo none'), 'none\n');
  await fs.mkdir('a/b/c', { recursive: true });
  assert.equal(await sh('cd /srv/mk && stat -c "%n %F %a" a a/b a/b/c'), 'a directory 755\na/b directory 755\na/b/c directory 755\n');
  const [c] = await fs.readdir('a/b', { withFileTypes: true });
  assert.equal(c.name, 'c');
  assert.ok(c.isDirectory());
  assert.deepEqual(await fs.readdir('a/b/c'), []);
  // Making one that exists is fine, as with recursive in Node.
  await fs.mkdir('a/b/c', { recursive: true });
  await fs.writeFile('file', 'x');
  await rejectsWith(fs.mkdir('file/sub'), 'ENOTDIR');
});

test('rename, copyFile, chmod and rm', { timeout: 120_000 }, async () => {
  const fs = await freshFs('/srv/mv');
  await fs.writeFile('old.txt', 'content');
  await fs.rename('old.txt', 'new.txt');
  await rejectsWith(fs.stat('old.txt'), 'ENOENT');
  assert.equal(await fs.readFile('new.txt', 'utf8'), 'content');

  await fs.copyFile('new.txt', 'copy.txt');
  assert.equal(await fs.readFile('copy.txt', 'utf8'), 'content');
  await fs.writeFile('tree/x/1.txt', 'one');
  await fs.writeFile('tree/2.txt', 'two');
  await rejectsWith(fs.copyFile('tree', 'tree2'), 'EISDIR');
  await fs.copyFile('tree', 'tree2', { recursive: true });
  assert.equal(await fs.readFile('tree2/x/1.txt', 'utf8'), 'one');
  assert.equal(await fs.readFile('tree2/2.txt', 'utf8'), 'two');

  await fs.chmod('copy.txt', 0o755);
  assert.equal((await fs.stat('copy.txt')).mode, 0o755);
  await fs.chmod('tree2', 0o700, { recursive: true });
  assert.equal(await sh('cd /srv/mv/tree2 && stat -c "%n %a" . x x/1.txt 2.txt'), '. 700\nx 700\nx/1.txt 700\n2.txt 700\n');
  await fs.chown('tree2', { uid: 1000, gid: 'nogroup', recursive: true });
  assert.equal(await sh('stat -c %u:%G /srv/mv/tree2/x/1.txt'), '1000:nogroup\n');

  await fs.rm('copy.txt');
  assert.equal(await fs.exists('copy.txt'), false);
  await rejectsWith(fs.rm('copy.txt'), 'ENOENT');
  await fs.rm('copy.txt', { force: true });
  await rejectsWith(fs.rm('tree2'), 'ENOTEMPTY');
  await fs.rm('tree2', { recursive: true });
  assert.equal(await sh('test -e /srv/mv/tree2 || echo gone'), 'gone\n');
});

test('errors carry the errno codes', { timeout: 120_000 }, async () => {
  const fs = await freshFs('/srv/err');
  await fs.writeFile('dir/f', 'x');
  await assert.rejects(fs.readFile('missing.txt'), (e) => {
    assert.ok(e instanceof FilesystemError);
    assert.equal(e.code, 'ENOENT');
    assert.equal(e.syscall, 'read');
    assert.ok(e.path.endsWith('missing.txt'), e.path);
    return true;
  });
  await rejectsWith(fs.readFile('dir'), 'EISDIR');
  await rejectsWith(fs.writeFile('dir', 'over a directory'), 'EISDIR');
  await rejectsWith(fs.readFile('dir/f/below'), 'ENOTDIR');
  await rejectsWith(fs.chmod('dir/f', 0o17777), 'EINVAL');
  // `..` is resolved in the box, never above its root.
  assert.equal(await fs.readFile('../../../../../etc/hostname', 'utf8'), await sh('cat /etc/hostname'));
});

test('watch: a new subdirectory and the file made in it', { timeout: 120_000 }, async () => {
  const fs = await freshFs('/srv/w');
  await fs.mkdir('existing');
  const watcher = await fs.watch('/srv/w', { recursive: true });
  const seen = [];
  watcher.on('event', (e) => seen.push(e));
  try {
    const want = (path, pred) => () => seen.find((e) => e.type === 'event' && e.path === path && pred(e));
    const collect = (what, check) => waitFor(`${what} in ${JSON.stringify(seen)}`, async () => check());
    const first = await collect('the subscription', () => seen.find((e) => e.type === 'subscribed'));
    assert.deepEqual(first, { type: 'subscribed', paths: ['/srv/w'] });
    await sh('mkdir -p /srv/w/new/deeper && printf hello > /srv/w/new/deeper/file.txt && printf x > /srv/w/existing/e.txt');
    const dir = await collect('the new directory', want('/srv/w/new', (e) => e.event === 'create'));
    assert.equal(dir.isDir, true);
    assert.ok(!Number.isNaN(Date.parse(dir.timestamp)), dir.timestamp);
    // Made before the watch on its new directory was: reported all the same.
    const file = await collect(
      'the file in the new subdirectory',
      want('/srv/w/new/deeper/file.txt', (e) => (e.event === 'create' || e.event === 'write') && e.size === 5),
    );
    assert.equal(file.isDir, false);
    await collect('the file in the existing directory', want('/srv/w/existing/e.txt', (e) => e.event === 'create'));
    // A write through the API is a write of the target, never of its
    // temporary file.
    await fs.writeFile('/srv/w/new/deeper/file.txt', 'changed!');
    await collect('the write through the API', want('/srv/w/new/deeper/file.txt', (e) => e.event === 'write' && e.size === 8));
    await sh('rm /srv/w/existing/e.txt');
    await collect('the remove', want('/srv/w/existing/e.txt', (e) => e.event === 'remove'));
    assert.ok(!seen.some((e) => String(e.path).includes('.bothy-upload-')), JSON.stringify(seen));
    assert.ok(!seen.some((e) => e.type === 'error'), JSON.stringify(seen));
  } finally {
    watcher.close();
  }
  assert.equal(watcher.isClosed(), true);
});
