// Prints the size of snorky.js: raw, minified (terser), and minified and
// gzipped. The README quotes these figures.
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { minify } from 'terser';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const src = readFileSync(join(root, 'snorky.js'), 'utf8');
const min = (await minify(src, { compress: true, mangle: true })).code;
const kib = (n) => `${(n / 1024).toFixed(1)} KiB`;
console.log(`snorky.js: ${kib(src.length)} raw, ${kib(gzipSync(src, { level: 9 }).length)} gzipped, ${kib(min.length)} minified, ${kib(gzipSync(min, { level: 9 }).length)} minified and gzipped`);
