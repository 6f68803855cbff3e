// The models of a tokenizer.json (Unigram, WordLevel, WordPiece): one pre-tokenised piece -> ids,
// each as the `tokenizers` library computes it (tie-breaks and unknown-token rules included).
const codePoints = (s) => Array.from(s);

// Thrown for what the port does not cover (BPE, ByteLevel...): the page then embeds text on the server.
export class UnsupportedTokenizer extends Error {
  get name() { return 'UnsupportedTokenizer'; }
}

const UNK_PENALTY = 10.0;

class Unigram {
  constructor(cfg) {
    this.ids = new Map();
    this.scores = cfg.vocab.map(([, score]) => score);
    this.maxLen = 1;
    let minScore = Infinity;
    cfg.vocab.forEach(([piece, score], id) => {
      this.ids.set(piece, id); // a repeated piece keeps its last id, as the library's HashMap does
      this.maxLen = Math.max(this.maxLen, codePoints(piece).length);
      if (score < minScore) minScore = score;
    });
    this.unkId = cfg.unk_id ?? null;
    this.unkScore = minScore - UNK_PENALTY;
    this.byteFallback = !!cfg.byte_fallback;
  }

  tokenToId(t) { return this.ids.get(t); }

  // Viterbi as the library's encode_optimized: candidates in order of start, then length; a later
  // candidate replaces the best path to its end only when strictly better; unknown runs are fused.
  pieces(s) {
    const bounds = [0];
    for (const ch of s) bounds.push(bounds[bounds.length - 1] + ch.length);
    const n = bounds.length - 1;
    const best = Array.from({ length: n + 1 }, () => ({ score: 0, start: -1, id: 0 }));
    for (let i = 0; i < n; i++) {
      const base = best[i].score;
      let single = false;
      for (let j = i + 1; j <= Math.min(n, i + this.maxLen); j++) {
        const id = this.ids.get(s.slice(bounds[i], bounds[j]));
        if (id === undefined) continue;
        const cand = this.scores[id] + base, node = best[j];
        if (node.start < 0 || cand > node.score) Object.assign(node, { score: cand, start: i, id });
        if (j === i + 1) single = true;
      }
      if (!single) {
        if (this.unkId === null) throw new Error('tokenizer.js: unknown character and the model has no unk_id');
        const cand = this.unkScore + base, node = best[i + 1];
        if (node.start < 0 || cand > node.score) Object.assign(node, { score: cand, start: i, id: this.unkId });
      }
    }
    const out = [];
    let unk = '';
    for (let end = n; end > 0;) {
      const node = best[end], piece = s.slice(bounds[node.start], bounds[end]);
      if (this.unkId !== null && node.id === this.unkId) unk = piece + unk;
      else { if (unk) { out.push(unk); unk = ''; } out.push(piece); }
      end = node.start;
    }
    if (unk) out.push(unk);
    return out.reverse();
  }

  tokenize(s) {
    return this.pieces(s).flatMap((p) => {
      const id = this.ids.get(p);
      if (id !== undefined) return [id];
      if (this.byteFallback) {
        const bytes = Array.from(new TextEncoder().encode(p), (b) => this.ids.get(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`));
        if (bytes.every((b) => b !== undefined)) return bytes;
      }
      return [this.unkId];
    });
  }
}

class WordLevel {
  constructor(cfg) { this.vocab = new Map(Object.entries(cfg.vocab)); this.unk = cfg.unk_token; }
  tokenToId(t) { return this.vocab.get(t); }
  tokenize(s) {
    const id = this.vocab.get(s) ?? this.vocab.get(this.unk);
    if (id === undefined) throw new Error(`tokenizer.js: ${JSON.stringify(s)} is not in the vocabulary and there is no unk_token`);
    return [id];
  }
}

class WordPiece extends WordLevel {
  constructor(cfg) {
    super(cfg);
    this.prefix = cfg.continuing_subword_prefix ?? '##';
    this.maxChars = cfg.max_input_chars_per_word ?? 100;
  }
  tokenize(s) {
    const unk = () => { const id = this.vocab.get(this.unk); if (id === undefined) throw new Error('tokenizer.js: no unk_token'); return [id]; };
    const chars = codePoints(s);
    if (chars.length > this.maxChars) return unk();
    const out = [];
    for (let start = 0; start < chars.length;) {
      let end = chars.length, id;
      for (; start < end; end--) {
        id = this.vocab.get((start > 0 ? this.prefix : '') + chars.slice(start, end).join(''));
        if (id !== undefined) break;
      }
      if (id === undefined) return unk();
      out.push(id);
      start = end;
    }
    return out;
  }
}

export function makeModel(cfg) {
  switch (cfg.type) {
    case 'Unigram': return new Unigram(cfg);
    case 'WordLevel': return new WordLevel(cfg);
    case 'WordPiece': return new WordPiece(cfg);
    default: throw new UnsupportedTokenizer(`tokenizer.js: model ${cfg.type} is not supported`);
  }
}
