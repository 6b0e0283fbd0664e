// Bundles web/src into the committed assets (service/static/dist by default, or the directory given as the
// first argument). Deterministic: pinned esbuild, no timestamps, no source maps.
import { build } from 'esbuild';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const outdir = path.resolve(process.argv[2] || path.join(here, '..', 'service', 'static', 'dist'));
const common = {
  bundle: true,
  minify: true,
  format: 'iife',
  target: ['es2020'],
  platform: 'browser',
  legalComments: 'eof',
  charset: 'utf8',
  logLevel: 'warning',
};
const entries = [
  { in: 'verifier.js' },
  { in: 'sw.js' },
  { in: 'citizen.js', globalName: 'healthpsiCitizen' },
];
for (const entry of entries) {
  await build({
    ...common,
    entryPoints: [path.join(here, 'src', entry.in)],
    outfile: path.join(outdir, entry.in),
    globalName: entry.globalName,
  });
}
