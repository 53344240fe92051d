// sharp thumbnails, timed inside the process (node start-up and module load are not counted).
//
//   UV_THREADPOOL_SIZE=N node sharp_bench.js --files LIST [--parallel P] [--concurrency C] [--size 256]
//                                              [--quality 80] [--out DIR]
//
// --parallel: images in flight at once (a promise pool; sharp runs each on a libuv thread, so set
//             UV_THREADPOOL_SIZE >= P). --concurrency: libvips threads per image (sharp.concurrency; 0 = sharp's own
//             default). Prints one JSON line: {"count", "seconds", "sharp", "vips", "concurrency", "parallel"}.
// With --out, each result is also written losslessly (PNG) and as the JPEG, for quality measurement.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const sharp = require('sharp');

function arg(name, dflt) {
  const i = process.argv.indexOf('--' + name);
  return i >= 0 ? process.argv[i + 1] : dflt;
}

async function main() {
  const files = fs.readFileSync(arg('files'), 'utf8').split('\n').filter(Boolean);
  const parallel = parseInt(arg('parallel', String(os.cpus().length)), 10);
  const conc = parseInt(arg('concurrency', '0'), 10);
  const size = parseInt(arg('size', '256'), 10);
  const quality = parseInt(arg('quality', '80'), 10);
  const out = arg('out', null);
  sharp.cache(false);
  if (conc > 0) sharp.concurrency(conc);
  let next = 0;
  let count = 0;
  async function one(file) {
    const pipeline = sharp(file).rotate().resize(size, size, { fit: 'inside', withoutEnlargement: true });
    const jpeg = await pipeline.clone().jpeg({ quality }).toBuffer();
    if (out) {
      const stem = path.basename(file, path.extname(file));
      fs.writeFileSync(path.join(out, stem + '.jpg'), jpeg);
      await pipeline.clone().png().toFile(path.join(out, stem + '.png'));
    }
    count += 1;
  }
  async function lane() {
    while (next < files.length) {
      const file = files[next++];
      await one(file);
    }
  }
  const started = process.hrtime.bigint();
  await Promise.all(Array.from({ length: parallel }, lane));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  console.log(JSON.stringify({
    count, seconds, sharp: sharp.versions.sharp, vips: sharp.versions.vips,
    concurrency: sharp.concurrency(), parallel,
  }));
}

main().catch((err) => { console.error(err); process.exit(1); });
