// runtimes/static/tokenizer.js (over the vendored @huggingface/tokenizers) under node, for
// tests/test_tokenizer_js.py: reads a case file
//   {"tokenizer": PATH, "spec": {...TokenizerSpec}, "texts": [...], "out": PATH}
// and writes {"ids": [[...], ...], "masks": [[...], ...], "seconds": {"load": s, "encode": s}} to `out`
// (or {"error": message} when the tokenizer cannot be loaded).
//   node tokenize.mjs case.json
import { readFileSync, writeFileSync } from 'node:fs';
import { BundleTokenizer } from '../../runtimes/static/tokenizer.js';

const cfg = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const t0 = performance.now();
let out;
try {
  const tok = new BundleTokenizer(JSON.parse(readFileSync(cfg.tokenizer, 'utf8')), cfg.spec);
  const t1 = performance.now();
  const encoded = cfg.texts.map((t) => tok.encode(t));
  out = { ids: encoded.map((e) => e.ids), masks: encoded.map((e) => e.mask),
          seconds: { load: (t1 - t0) / 1000, encode: (performance.now() - t1) / 1000 } };
} catch (err) {
  out = { error: `${err.name}: ${err.message}` };
}
writeFileSync(cfg.out, JSON.stringify(out));
