// The bundle's tokenizer.json run in the browser (and under node for the tests): a port of what the
// `tokenizers` library does when lugha.tokenizer encodes one text, so the phone feeds the text graph the
// same input_ids as the server. Order, as in the library: added tokens are split off the raw text, the
// rest is normalised, pre-tokenised, cut into model pieces; then truncation, special tokens, padding.
// Offsets are never needed, so every step works on plain strings. Unsupported parts of a tokenizer.json
// (BPE, ByteLevel) throw UnsupportedTokenizer: the page then embeds text on the server.
import { precompiledNormalizer } from './tokenizer_charsmap.js';
import { UnsupportedTokenizer, makeModel } from './tokenizer_models.js';

export { UnsupportedTokenizer };

const unsupported = (what, cfg) => new UnsupportedTokenizer(`tokenizer.js: ${what} ${cfg && cfg.type} is not supported`);
const WS = /\p{White_Space}/u;
const isWs = (c) => WS.test(c);
const isPunct = (c) => /[\p{P}!-\/:-@\[-`{-~]/u.test(c); // ASCII punctuation (incl. $+<=>^`|~) or Unicode P*
const WORD = '\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}'; // Rust regex's Unicode \w
const codePoints = (s) => Array.from(s);

// --- normalizers: string -> string ------------------------------------------------------------------
const NMT_DROP = (c) => (c >= 0x1 && c <= 0x8) || c === 0xb || (c >= 0xe && c <= 0x1f) || c === 0x7f || c === 0x8f || c === 0x9f;
const NMT_SPACE = (c) => [0x9, 0xa, 0xc, 0xd, 0x1680, 0x2028, 0x2029, 0x2581, 0xfeff, 0xfffd].includes(c) || (c >= 0x200b && c <= 0x200f);

function nmt(s) {
  let out = '';
  for (const ch of s) {
    const c = ch.codePointAt(0);
    if (!NMT_DROP(c)) out += NMT_SPACE(c) ? ' ' : ch;
  }
  return out;
}

const isChinese = (c) => (c >= 0x4e00 && c <= 0x9fff) || (c >= 0x3400 && c <= 0x4dbf) || (c >= 0x20000 && c <= 0x2a6df)
  || (c >= 0x2a700 && c <= 0x2b73f) || (c >= 0x2b740 && c <= 0x2b81f) || (c >= 0x2b920 && c <= 0x2ceaf)
  || (c >= 0xf900 && c <= 0xfaff) || (c >= 0x2f800 && c <= 0x2fa1f);

function bertNormalizer(cfg) {
  const lower = cfg.lowercase !== false;
  const strip = cfg.strip_accents ?? lower; // null follows lowercase, as in the library
  return (s) => {
    let out = '';
    for (const ch of s) {
      const c = ch.codePointAt(0);
      if (cfg.clean_text !== false) {
        if (c === 0 || c === 0xfffd || (!'\t\n\r'.includes(ch) && /\p{C}/u.test(ch))) continue;
        if ('\t\n\r'.includes(ch) || isWs(ch)) { out += ' '; continue; }
      }
      out += cfg.handle_chinese_chars !== false && isChinese(c) ? ` ${ch} ` : ch;
    }
    if (strip) out = out.normalize('NFD').replace(/\p{Mn}/gu, '');
    return lower ? lowercase(out) : out;
  };
}

const lowercase = (s) => codePoints(s).map((c) => c.toLowerCase()).join(''); // per char: no final-sigma rule

// Replace and Split patterns are Oniguruma regexes, whose \d \w \s are Unicode-wide (JS's are ASCII).
const ONIG = { d: ['[\\p{Nd}]', '\\p{Nd}'], D: ['[^\\p{Nd}]', '\\P{Nd}'], s: ['[\\p{White_Space}]', '\\p{White_Space}'],
               S: ['[^\\p{White_Space}]', '\\P{White_Space}'], w: ['[\\p{L}\\p{M}\\p{Nd}\\p{Pc}]', '\\p{L}\\p{M}\\p{Nd}\\p{Pc}'],
               W: ['[^\\p{L}\\p{M}\\p{Nd}\\p{Pc}]', null] };

function onigToJs(src) {
  let out = '', inClass = false;
  for (let i = 0; i < src.length; i++) {
    const c = src[i];
    if (c === '\\' && i + 1 < src.length) {
      const next = src[++i];
      if (next in ONIG) {
        const rep = ONIG[next][inClass ? 1 : 0];
        if (rep === null) throw new UnsupportedTokenizer(`tokenizer.js: \\${next} inside [...] in regex ${src}`);
        out += rep;
      } else out += c + next;
      continue;
    }
    if (c === '[' && !inClass) inClass = true;
    else if (c === ']' && inClass) inClass = false;
    out += c;
  }
  return out;
}

function jsRegex(pattern, flags = 'gu') {
  if ('String' in pattern) return new RegExp(pattern.String.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), flags);
  return new RegExp(onigToJs(pattern.Regex), flags);
}

export function makeNormalizer(cfg) {
  if (!cfg) return (s) => s;
  switch (cfg.type) {
    case 'Sequence': {
      const steps = cfg.normalizers.map(makeNormalizer);
      return (s) => steps.reduce((acc, f) => f(acc), s);
    }
    case 'NFC': case 'NFD': case 'NFKC': case 'NFKD': return (s) => s.normalize(cfg.type);
    case 'Nmt': return nmt;
    case 'Lowercase': return lowercase;
    case 'StripAccents': return (s) => s.replace(/\p{M}/gu, '');
    case 'Strip': return (s) => s.replace(cfg.strip_left !== false ? /^\p{White_Space}+/u : /^$/, '')
      .replace(cfg.strip_right !== false ? /\p{White_Space}+$/u : /^$/, '');
    case 'Replace': { const re = jsRegex(cfg.pattern); return (s) => s.replace(re, () => cfg.content); }
    case 'Prepend': return (s) => (s ? cfg.prepend + s : s);
    case 'BertNormalizer': return bertNormalizer(cfg);
    case 'Precompiled': return precompiledNormalizer(cfg.precompiled_charsmap);
    default: throw unsupported('normalizer', cfg);
  }
}

// --- splitting (the library's NormalizedString::split) ----------------------------------------------
// `matches`: [start, end, isMatch] covering the string, in order (UTF-16 offsets).
function charMatches(s, pred) {
  const out = [];
  let last = 0, i = 0;
  for (const ch of s) {
    if (pred(ch)) {
      if (last < i) out.push([last, i, false]);
      out.push([i, i + ch.length, true]);
      last = i + ch.length;
    }
    i += ch.length;
  }
  if (last < s.length) out.push([last, s.length, false]);
  return out;
}

function regexMatches(s, re, invert = false) {
  const out = [];
  let prev = 0;
  for (const m of s.matchAll(re)) {
    if (prev !== m.index) out.push([prev, m.index, invert]);
    out.push([m.index, m.index + m[0].length, !invert]);
    prev = m.index + m[0].length;
  }
  if (prev !== s.length) out.push([prev, s.length, invert]);
  return out;
}

function splitBy(s, matches, behavior) {
  let spans;
  const merge = (list, toStart) => {
    let previous = false;
    const acc = [];
    for (const [a, b, isMatch] of list) {
      const last = acc[acc.length - 1];
      if (isMatch && !previous && last) { if (toStart) last[0] = a; else last[1] = b; } else acc.push([a, b]);
      previous = isMatch;
    }
    return acc;
  };
  switch (behavior) {
    case 'Removed': spans = matches.filter((m) => !m[2]); break;
    case 'Isolated': spans = matches; break;
    case 'MergedWithPrevious': spans = merge(matches, false); break;
    case 'MergedWithNext': spans = merge([...matches].reverse(), true).reverse(); break;
    case 'Contiguous': {
      spans = [];
      let previous = false;
      for (const [a, b, isMatch] of matches) {
        if (isMatch === previous && spans.length) spans[spans.length - 1][1] = b; else spans.push([a, b]);
        previous = isMatch;
      }
      break;
    }
    default: throw new UnsupportedTokenizer(`tokenizer.js: split behavior ${behavior} is not supported`);
  }
  return spans.map(([a, b]) => s.slice(a, b)).filter((p) => p.length > 0);
}

// --- pre-tokenizers: (piece, isFirst) -> pieces ------------------------------------------------------
export function makePreTokenizer(cfg) {
  if (!cfg) return (s) => [s];
  switch (cfg.type) {
    case 'Sequence': {
      const steps = cfg.pretokenizers.map(makePreTokenizer);
      return (s, first) => steps.reduce((pieces, f) => pieces.flatMap((p, i) => f(p, first && i === 0)), [s]);
    }
    case 'Metaspace': {
      const rep = cfg.replacement ?? '\u2581';
      const scheme = cfg.prepend_scheme ?? (cfg.add_prefix_space === false ? 'never' : 'always');
      return (s, first) => {
        s = s.split(' ').join(rep);
        if (s && !s.startsWith(rep) && (scheme === 'always' || (scheme === 'first' && first))) s = rep + s;
        return cfg.split === false ? [s].filter(Boolean) : splitBy(s, charMatches(s, (c) => c === rep), 'MergedWithNext');
      };
    }
    case 'Whitespace': {
      const re = new RegExp(`[${WORD}]+|[^${WORD}\\p{White_Space}]+`, 'gu');
      return (s) => splitBy(s, regexMatches(s, re, true), 'Removed'); // the regex's matches are the words
    }
    case 'WhitespaceSplit': return (s) => splitBy(s, charMatches(s, isWs), 'Removed');
    case 'BertPreTokenizer':
      return (s) => splitBy(s, charMatches(s, isWs), 'Removed').flatMap((p) => splitBy(p, charMatches(p, isPunct), 'Isolated'));
    case 'Punctuation': return (s) => splitBy(s, charMatches(s, isPunct), cfg.behavior || 'Isolated');
    case 'Digits': {
      const digit = (c) => /\p{N}/u.test(c); // Rust's char::is_numeric: Nd, Nl, No
      return (s) => splitBy(s, charMatches(s, digit), cfg.individual_digits ? 'Isolated' : 'Contiguous');
    }
    case 'Split': {
      const re = jsRegex(cfg.pattern);
      return (s) => splitBy(s, regexMatches(s, re, !!cfg.invert), cfg.behavior);
    }
    default: throw unsupported('pre-tokenizer', cfg);
  }
}

// --- post-processors: the special tokens around one sequence ------------------------------------------
function makeSpecials(cfg) {
  if (!cfg) return { before: [], after: [] };
  switch (cfg.type) {
    case 'TemplateProcessing': {
      const parts = { before: [], after: [] };
      let seen = false;
      for (const item of cfg.single) {
        if ('Sequence' in item) { seen = true; continue; }
        (seen ? parts.after : parts.before).push(...cfg.special_tokens[item.SpecialToken.id].ids);
      }
      return parts;
    }
    case 'RobertaProcessing': case 'BertProcessing': return { before: [cfg.cls[1]], after: [cfg.sep[1]] };
    case 'ByteLevel': return { before: [], after: [] }; // offsets only
    case 'Sequence': {
      const all = cfg.processors.map(makeSpecials);
      return { before: all.flatMap((p) => p.before), after: all.flatMap((p) => p.after) };
    }
    default: throw unsupported('post-processor', cfg);
  }
}

// --- added tokens: split off before the model sees the text --------------------------------------------
function addedSplitter(tokens, normalize) {
  const norm = tokens.filter((t) => t.normalized).map((t) => ({ ...t, match: normalize(t.content) }));
  const raw = tokens.filter((t) => !t.normalized).map((t) => ({ ...t, match: t.content }));
  const wordEnd = new RegExp(`[${WORD}]$`, 'u'), wordStart = new RegExp(`^[${WORD}]`, 'u');
  // Leftmost-longest matches; each piece: {text, id} (id set for an added token).
  const split = (s, list) => {
    const out = [];
    let from = 0, pos = 0;
    while (list.length && pos < s.length) {
      let hit = null;
      for (let i = pos; i < s.length && !hit; i++) {
        for (const t of list) if (t.match && s.startsWith(t.match, i) && (!hit || t.match.length > hit.t.match.length)) hit = { i, t };
      }
      if (!hit) break;
      let start = hit.i, stop = hit.i + hit.t.match.length;
      pos = stop;
      if (hit.t.single_word && ((start > 0 && wordEnd.test(s.slice(0, start))) || (stop < s.length && wordStart.test(s.slice(stop))))) {
        continue; // not a whole word: skipped, the search goes on after it
      }
      if (hit.t.lstrip) start = Math.max(from, s.slice(0, start).replace(/\p{White_Space}*$/u, '').length);
      if (hit.t.rstrip) stop += s.slice(stop).length - s.slice(stop).replace(/^\p{White_Space}*/u, '').length;
      if (from < start) out.push({ text: s.slice(from, start), start: from });
      out.push({ text: s.slice(start, stop), id: hit.t.id });
      from = pos = stop;
    }
    if (from < s.length || !out.length) out.push({ text: s.slice(from), start: from });
    return out;
  };
  return (text) => split(text, raw).flatMap((p) => {
    if (p.id !== undefined) return [p];
    const first = p.start === 0;
    return split(normalize(p.text), norm).map((q) => ({ ...q, first: first && q.start === 0 }));
  });
}

export class BundleTokenizer {
  // `data`: the parsed tokenizer.json; `spec`: the bundle manifest's tokenizer spec (lugha.tokenizer.TokenizerSpec).
  constructor(data, spec = {}) {
    this.spec = { max_length: 64, padding: 'max_length', truncation: true, prefix: '', pad_token: null,
                  add_special_tokens: true, ...spec };
    this.model = makeModel(data.model);
    this.normalize = makeNormalizer(data.normalizer);
    this.preTokenize = makePreTokenizer(data.pre_tokenizer);
    this.specials = makeSpecials(data.post_processor);
    this.added = new Map((data.added_tokens || []).map((t) => [t.content, t.id]));
    this.splitAdded = addedSplitter(data.added_tokens || [], this.normalize);
    this.padId = this.resolvePad(data);
  }

  tokenToId(t) { return this.added.get(t) ?? this.model.tokenToId(t); }

  resolvePad(data) {
    const spec = this.spec;
    if (spec.pad_token != null) {
      const id = this.tokenToId(spec.pad_token);
      if (id === undefined) throw new Error(`tokenizer.js: pad_token ${spec.pad_token} is not in the vocabulary`);
      return id;
    }
    if (data.padding && data.padding.pad_id != null) return data.padding.pad_id;
    for (const t of ['<pad>', '[PAD]', '<|pad|>', '<|padding|>']) if (this.tokenToId(t) !== undefined) return this.tokenToId(t);
    throw new Error('tokenizer.js: no padding token');
  }

  // The ids the library gives for one text (prefix, truncation and special tokens; no padding).
  ids(text) {
    const pieces = this.splitAdded(this.spec.prefix + text);
    let ids = pieces.flatMap((p) => (p.id !== undefined ? [p.id]
      : this.preTokenize(p.text, p.first).filter((w) => w.length).flatMap((w) => this.model.tokenize(w))));
    const { before, after } = this.spec.add_special_tokens ? this.specials : { before: [], after: [] };
    if (this.spec.truncation) ids = ids.slice(0, Math.max(0, this.spec.max_length - before.length - after.length));
    return [...before, ...ids, ...after];
  }

  // input_ids and attention_mask as lugha.tokenizer.TextTokenizer.encode_batch gives them for [text].
  encode(text) {
    const ids = this.ids(text);
    const width = this.spec.padding === 'max_length' ? this.spec.max_length : ids.length;
    if (ids.length > width) throw new Error(`tokenizer.js: ${ids.length} tokens > max_length ${width} and truncation is off`);
    const mask = ids.map(() => 1);
    while (ids.length < width) { ids.push(this.padId); mask.push(0); }
    return { ids, mask };
  }
}
