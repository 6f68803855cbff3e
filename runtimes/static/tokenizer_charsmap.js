// The `Precompiled` normaliser of SentencePiece tokenizers (XLM-R and friends exported from the hub):
// SentencePiece's nmt_nfkc rules compiled into a double-array trie over UTF-8 bytes plus a blob of
// replacement strings. Read as the `tokenizers` library reads it (its spm_precompiled crate): per
// grapheme cluster shorter than 6 bytes, the *first* (shortest) trie hit replaces the whole cluster;
// otherwise each character is looked up alone. That quirk is SentencePiece's, kept for exact ids.
const utf8 = new TextEncoder();
const text = new TextDecoder();

function base64Bytes(b64) {
  if (typeof atob === 'function') return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return new Uint8Array(Buffer.from(b64, 'base64')); // node without atob (never in a browser)
}

export function precompiledNormalizer(charsmapB64) {
  const bytes = base64Bytes(charsmapB64);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const trieBytes = view.getUint32(0, true);
  const trie = new Uint32Array(trieBytes / 4);
  for (let i = 0; i < trie.length; i++) trie[i] = view.getUint32(4 + 4 * i, true);
  const blob = bytes.subarray(4 + trieBytes);

  const offset = (u) => (u >>> 10) << ((u & 0x200) >>> 6);
  const firstHit = (key) => { // the first value of a common-prefix search, or -1
    let pos = offset(trie[0]);
    for (const c of key) {
      if (c === 0) break;
      pos ^= c;
      const unit = trie[pos];
      if (unit === undefined || ((unit & 0x800000ff) >>> 0) !== c) return -1;
      pos ^= offset(unit);
      if ((unit >>> 8) & 1) return trie[pos] & 0x7fffffff;
    }
    return -1;
  };
  const replacement = (s) => {
    const at = firstHit(utf8.encode(s));
    if (at < 0) return null;
    let end = at;
    while (end < blob.length && blob[end] !== 0) end++;
    return text.decode(blob.subarray(at, end));
  };
  const segmenter = new Intl.Segmenter(undefined, { granularity: 'grapheme' });

  return (s) => {
    let out = '';
    for (const { segment } of segmenter.segment(s)) {
      const whole = utf8.encode(segment).length < 6 ? replacement(segment) : null;
      if (whole !== null) { out += whole; continue; }
      for (const ch of segment) out += replacement(ch) ?? ch;
    }
    return out;
  };
}
