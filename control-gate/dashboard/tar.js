// A Doee directory picked in the browser, as the .tar.gz that
// POST /api/v1/projects/<p>/doees takes: a small ustar writer, then the
// browser's own gzip (CompressionStream). Like `isms deploy`, it leaves out
// `target` and `.git` at the top of the directory.

const BLOCK = 512;
const encoder = new TextEncoder();

/** Entries skipped at the top of the directory, as the CLI does. */
const SKIPPED = new Set(['target', '.git']);

/**
 * The files of an <input webkitdirectory> as [{path, file}], relative to
 * the picked directory, sorted, without the skipped folders.
 */
export function directoryEntries(fileList) {
  const files = Array.from(fileList);
  if (!files.length) return [];
  const entries = [];
  for (const file of files) {
    const parts = (file.webkitRelativePath || file.name).split('/').filter(Boolean);
    // The first part is the picked directory itself.
    const inner = parts.length > 1 ? parts.slice(1) : parts;
    if (inner.length > 1 && SKIPPED.has(inner[0])) continue;
    entries.push({ path: inner.join('/'), file });
  }
  entries.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return entries;
}

function writeString(header, offset, length, text) {
  const bytes = encoder.encode(text);
  if (bytes.length > length) throw new Error(`"${text}" does not fit in a tar header`);
  header.set(bytes, offset);
}

function writeOctal(header, offset, length, value) {
  // length-1 octal digits and a NUL.
  const digits = Math.floor(value).toString(8).padStart(length - 1, '0');
  if (digits.length > length - 1) throw new Error(`${value} is too large for a tar header`);
  writeString(header, offset, length, `${digits}\0`);
}

/** Splits a path into ustar's prefix (155 bytes) and name (100 bytes). */
function splitPath(path) {
  if (encoder.encode(path).length <= 100) return ['', path];
  for (let i = path.indexOf('/'); i >= 0; i = path.indexOf('/', i + 1)) {
    const prefix = path.slice(0, i);
    const name = path.slice(i + 1);
    if (encoder.encode(prefix).length <= 155 && encoder.encode(name).length <= 100 && name) {
      return [prefix, name];
    }
  }
  throw new Error(`the path ${path} is too long to upload (at most 255 bytes, 100 per file name)`);
}

function header(path, { size, mode, type, mtime }) {
  const block = new Uint8Array(BLOCK);
  const [prefix, name] = splitPath(path);
  writeString(block, 0, 100, name);
  writeOctal(block, 100, 8, mode);
  writeOctal(block, 108, 8, 0);
  writeOctal(block, 116, 8, 0);
  writeOctal(block, 124, 12, size);
  writeOctal(block, 136, 12, mtime);
  block.fill(0x20, 148, 156); // the checksum counts itself as spaces
  writeString(block, 156, 1, type);
  writeString(block, 257, 6, 'ustar\0');
  writeString(block, 263, 2, '00');
  writeString(block, 345, 155, prefix);
  const sum = block.reduce((total, b) => total + b, 0);
  writeString(block, 148, 8, `${sum.toString(8).padStart(6, '0')}\0 `);
  return block;
}

/**
 * A tar archive of [{path, file}] with a directory entry before the first
 * file of each folder. Resolves to a Blob.
 */
export async function tar(entries) {
  const parts = [];
  const dirs = new Set();
  for (const { path, file } of entries) {
    const folders = path.split('/').slice(0, -1);
    for (let i = 1; i <= folders.length; i += 1) {
      const dir = folders.slice(0, i).join('/');
      if (dirs.has(dir)) continue;
      dirs.add(dir);
      parts.push(header(`${dir}/`, { size: 0, mode: 0o755, type: '5', mtime: file.lastModified / 1000 }));
    }
    const bytes = new Uint8Array(await file.arrayBuffer());
    parts.push(header(path, { size: bytes.length, mode: 0o644, type: '0', mtime: file.lastModified / 1000 }));
    parts.push(bytes);
    const pad = (BLOCK - (bytes.length % BLOCK)) % BLOCK;
    if (pad) parts.push(new Uint8Array(pad));
  }
  parts.push(new Uint8Array(BLOCK * 2));
  return new Blob(parts, { type: 'application/x-tar' });
}

/** gzip, by the browser. */
export async function gzip(blob) {
  if (typeof CompressionStream === 'undefined') {
    throw new Error('this browser cannot compress (no CompressionStream): upload a .tar.gz instead');
  }
  const stream = blob.stream().pipeThrough(new CompressionStream('gzip'));
  return new Blob([await new Response(stream).arrayBuffer()], { type: 'application/gzip' });
}

/** The .tar.gz of a picked directory, and what went into it. */
export async function packDirectory(fileList) {
  const entries = directoryEntries(fileList);
  if (!entries.length) throw new Error('the chosen folder is empty');
  if (!entries.some((e) => e.path === 'doee.toml')) {
    throw new Error('the chosen folder has no doee.toml at its top: pick the Doee\'s own folder');
  }
  const archive = await gzip(await tar(entries));
  return { archive, files: entries.length };
}
