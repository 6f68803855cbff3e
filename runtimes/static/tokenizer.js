// The bundle's tokenizer.json on the phone (and under node for the tests), run by the vendored
// @huggingface/tokenizers (scripts/vendor_web.sh); here only what lugha.tokenizer adds around the
// `tokenizers` library (the spec's prefix, truncation, special tokens, padding) and a pass over the
// tokenizer.json: parts the JS library runs differently from the Rust one are handed to it as their Rust
// definition in parts it runs exactly, or refused with UnsupportedTokenizer (the page then embeds text on
// the server). tests/test_tokenizer_js.py holds both to the Python library's ids.
import { Tokenizer } from './vendor/tokenizers.min.mjs';

export class UnsupportedTokenizer extends Error {
  get name() { return 'UnsupportedTokenizer'; }
}
const refuse = (what) => { throw new UnsupportedTokenizer(`tokenizer.js: ${what} is not supported`); };
const scheme = (c) => c.prepend_scheme ?? (c.add_prefix_space === false ? 'never' : 'always'); // Metaspace's

const W = '\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}'; // Rust's Unicode \w (JS's is ASCII)
const PUNCT = '[\\p{P}!-\\/:-@\\[-`{-~]'; // ASCII punctuation or Unicode P*, as Rust's is_punc
const esc = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const replace = (Regex, content) => ({ type: 'Replace', pattern: { Regex }, content });
const split = (Regex, behavior, invert = false) => ({ type: 'Split', pattern: { Regex }, behavior, invert });
const keep = (Regex) => split(Regex, 'Removed', true); // the matches are the pieces
const norms = (normalizers) => ({ type: 'Sequence', normalizers });
const pres = (pretokenizers) => ({ type: 'Sequence', pretokenizers });
// Rust lowercases char by char (Σ is always σ); JS's toLowerCase makes a final Σ into ς.
const SIGMA = replace('\u03a3', '\u03c3');
// JS's BertNormalizer spaces only CJK ideographs below U+10000 ($& is the match, in the JS library only).
const CJK_ASTRAL = replace('[\\u{20000}-\\u{2A6DF}\\u{2A700}-\\u{2B81F}\\u{2B920}-\\u{2CEAF}\\u{2F800}-\\u{2FA1F}]', ' $& ');

function normalizer(c) {
  switch (c && c.type) {
    case 'Sequence': return { ...c, normalizers: c.normalizers.map(normalizer) };
    case 'Nmt': return norms([replace('[\\u0001-\\u0008\\u000B\\u000E-\\u001F\\u007F\\u008F\\u009F]', ''),
      replace('[\\u0009\\u000A\\u000C\\u000D\\u1680\\u200B-\\u200F\\u2028\\u2029\\u2581\\uFEFF\\uFFFD]', ' ')]);
    case 'Lowercase': return norms([SIGMA, c]);
    case 'BertNormalizer': return norms([...(c.lowercase !== false ? [SIGMA] : []),
      ...(c.handle_chinese_chars !== false ? [CJK_ASTRAL] : []), c]);
    case 'Strip': return norms([...(c.strip_left !== false ? [replace('\\A\\p{White_Space}+', '')] : []),
      ...(c.strip_right !== false ? [replace('\\p{White_Space}+\\z', '')] : [])]);
    case 'Prepend': return replace('\\A(?=[\\s\\S])', c.prepend.replaceAll('$', '$$$$')); // not on empty text
    case 'Replace': return { ...c, content: c.content.replaceAll('$', '$$$$') }; // a literal, not a JS pattern
    case 'Precompiled': return refuse('normalizer Precompiled (the JS library does not read its charsmap)');
    default: return c;
  }
}

function preTokenizer(c) {
  switch (c && c.type) {
    case 'Sequence': return { ...c, pretokenizers: c.pretokenizers.map(preTokenizer) };
    case 'Whitespace': return keep(`[${W}]+|[^${W}\\p{White_Space}]+`);
    case 'WhitespaceSplit': return keep('\\P{White_Space}+');
    case 'BertPreTokenizer': return pres([keep('\\P{White_Space}+'), split(PUNCT, 'Isolated')]);
    case 'Punctuation': return preTokenizer(split(PUNCT, c.behavior ?? 'Isolated'));
    case 'Digits': return keep(c.individual_digits ? '\\p{N}|\\P{N}+' : '\\p{N}+|\\P{N}+'); // Rust's is_numeric
    case 'Metaspace': {
      if (scheme(c) === 'first') refuse('pre-tokenizer Metaspace with prepend_scheme "first"'); // JS: every piece
      const r = esc(c.replacement ?? '\u2581'), own = { ...c, prepend_scheme: scheme(c), split: false };
      return c.split === false ? own : pres([own, keep(`${r}[^${r}]*|[^${r}]+`)]); // split: merged with next
    }
    case 'Split': {
      const pattern = 'String' in c.pattern ? { Regex: esc(c.pattern.String) } : c.pattern;
      if (c.invert ? c.behavior !== 'Removed' : !['Removed', 'Isolated'].includes(c.behavior)) {
        refuse(`pre-tokenizer Split with behavior ${c.behavior}${c.invert ? ' and invert' : ''}`);
      }
      if (!c.invert && c.behavior === 'Removed' && /(^|[^\\])\((?!\?)/.test(pattern.Regex)) {
        refuse('pre-tokenizer Split removing a regex with a capturing group'); // JS's split() keeps the group
      }
      return { ...c, pattern };
    }
    default: return c;
  }
}

// The JS library fuses unknown pieces across the words of a text, Rust within a word: the same only where
// nothing splits words, or a last Metaspace starts every word with a known piece (prepending always).
function fusesAcrossWords(data) {
  const m = data.model, known = (s) => (m.type === 'Unigram' ? m.vocab.some(([p]) => p === s) : s in m.vocab);
  let p = data.pre_tokenizer;
  while (p && p.type === 'Sequence') p = p.pretokenizers[p.pretokenizers.length - 1];
  return !!p && !(p.type === 'Metaspace' && scheme(p) === 'always' && known(p.replacement ?? '\u2581'));
}

function checked(data) {
  const m = data.model;
  const ready = { ...data, added_tokens: data.added_tokens || [], normalizer: normalizer(data.normalizer),
                  pre_tokenizer: preTokenizer(data.pre_tokenizer) };
  if ((data.added_tokens || []).some((t) => t.single_word)) refuse('an added token with single_word');
  if (m.type === 'Unigram' && m.byte_fallback) refuse('model Unigram with byte_fallback');
  if (m.type === 'BPE' && (m.byte_fallback || m.continuing_subword_prefix || m.end_of_word_suffix || m.dropout)) {
    refuse('model BPE with byte_fallback, a subword prefix or suffix, or dropout (not checked against Rust)');
  }
  if ((m.type === 'Unigram' || (m.type === 'BPE' && m.fuse_unk)) && fusesAcrossWords(data)) {
    refuse(`model ${m.type} behind pre-tokenizer ${data.pre_tokenizer.type} (JS fuses unknown pieces across words)`);
  }
  return ready;
}

export class BundleTokenizer {
  // `data`: the parsed tokenizer.json; `spec`: the bundle manifest's tokenizer spec (lugha.tokenizer.TokenizerSpec).
  constructor(data, spec = {}) {
    this.spec = { max_length: 64, padding: 'max_length', truncation: true, prefix: '', pad_token: null,
                  add_special_tokens: true, ...spec };
    const ready = checked(data);
    try { // parts the JS library lacks throw here; WordLevel is its Legacy model, unknown token from the config
      this.tok = new Tokenizer(ready, data.model.type === 'WordLevel' ? { unk_token: data.model.unk_token } : {});
    } catch (err) {
      throw new UnsupportedTokenizer(`tokenizer.js: ${err.message}`);
    }
    // The special tokens around one sequence: the post-processor's output around a marker.
    const marked = this.tok.post_processor ? this.tok.post_processor(['\0'], null, true).tokens : ['\0'];
    const ids = (tokens) => tokens.map((t) => this.tok.token_to_id(t));
    [this.before, this.after] = [ids(marked.slice(0, marked.indexOf('\0'))), ids(marked.slice(marked.indexOf('\0') + 1))];
    this.padId = this.resolvePad(data);
  }

  resolvePad(data) {
    const { pad_token: pad } = this.spec, id = (t) => this.tok.token_to_id(t);
    if (pad != null) return id(pad) ?? refuse(`pad_token ${pad} outside the vocabulary`);
    if (data.padding && data.padding.pad_id != null) return data.padding.pad_id;
    const found = ['<pad>', '[PAD]', '<|pad|>', '<|padding|>'].find((t) => id(t) !== undefined);
    return found !== undefined ? id(found) : refuse('a tokenizer with no padding token');
  }

  // input_ids and attention_mask as lugha.tokenizer.TextTokenizer.encode_batch gives them for [text].
  encode(text) {
    let ids = this.tok.encode(this.spec.prefix + text, { add_special_tokens: false }).ids;
    const [before, after] = this.spec.add_special_tokens ? [this.before, this.after] : [[], []];
    if (this.spec.truncation) ids = ids.slice(0, Math.max(0, this.spec.max_length - before.length - after.length));
    ids = [...before, ...ids, ...after];
    const width = this.spec.padding === 'max_length' ? this.spec.max_length : ids.length;
    if (ids.length > width) throw new Error(`tokenizer.js: ${ids.length} tokens > max_length ${width} and truncation is off`);
    const mask = ids.map(() => 1);
    while (ids.length < width) { ids.push(this.padId); mask.push(0); }
    return { ids, mask };
  }
}
