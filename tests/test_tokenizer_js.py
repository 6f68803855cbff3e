"""The phone's tokenizer (runtimes/static/tokenizer.js over the vendored @huggingface/tokenizers, run
under node) gives the ids lugha.tokenizer gives, or refuses the tokenizer (UnsupportedTokenizer: the page
then embeds text on the server) where the JS library does not run it as the Rust library does.

The oracle is the server's own path: ``lugha.tokenizer.load_tokenizer(file, spec).encode_batch([text])``
(the ``tokenizers`` library plus lugha's prefix and padding). Covered: the real multilingual-e5 tokenizer
(XLM-R SentencePiece Unigram) on every demo text of every demo language, the tiny test bundle's
WordLevel tokenizer, tokenizers built here of the other families a bundle may carry (WordPiece/BERT,
Unigram and BPE with other normalisers and pre-tokenisers, byte-level BPE, added tokens) and strings
chosen to break a port. Refused, each named: SentencePiece's precompiled charsmap, Unigram byte fallback,
Metaspace prepending "first", single_word added tokens, merging Split behaviours, and unknown pieces fused
across words (Unigram behind a word-splitting pre-tokenizer). Every mismatch is named in the failure.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from lugha.tokenizer import TokenizerSpec, load_tokenizer

REPO = Path(__file__).resolve().parents[1]
RUNNER = REPO / "tests" / "browser" / "tokenize.mjs"
LIBRARY = REPO / "runtimes" / "static" / "vendor" / "tokenizers.min.mjs"
E5_SPEC = TokenizerSpec(max_length=64, padding="longest", prefix="passage: ", pad_token="<pad>")

pytestmark = [
    pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (apt-get install nodejs)"),
    pytest.mark.skipif(not LIBRARY.is_file(), reason="@huggingface/tokenizers is not vendored (bash scripts/vendor_web.sh)"),
]

# Strings chosen to break a port: whitespace runs and kinds, controls, compatibility forms, combining
# marks, emoji sequences, digits of other scripts, literal special tokens, the meta symbol, long texts.
EDGE = [
    "", " ", "  leading", "trailing  ", "a  b   c", "tab\there\nnew\r\nline", "\u00a0nbsp\u2003em\u3000ideo",
    "\ufb01 ligature \uff26\uff55\uff4c\uff4c width \u2460\u2461 \u00bd", "x\u200by\u200dz\ufeffw\u2028v", "ctrl\x01\x07\x7f\x9f.",
    "<s> literal </s> and <mask> and <unk> <pad>", "a<mask>b", "  <mask>  x", "e\u0301 \u00e9 n\u0303 \u00f1",
    "\u00c7a va? Stra\u00dfe \u0130stanbul \u03a3\u038a\u03a3\u03a5\u03a6\u039f\u03a3", "\U0001f642\U0001f44d\U0001f3fd "
    "\U0001f468\u200d\U0001f469\u200d\U0001f467 \U0001f1f3\U0001f1ec", "123 4567 \u0663\u0664\u0665 \u0967\u0968\u0969",
    "punct!!! ... --- \u00abquotes\u00bb \u201csmart\u201d \u2018x\u2019 (a) [b] {c} @#$%^&*_+=|\\/~`",
    "\u4e2d\u6587\u5b57\u7b26 \u65e5\u672c\u8a9e \ud55c\uad6d\uc5b4", "\u2581meta\u2581space \u2581", "a" * 300,
    " ".join(["word"] * 100), "\u1eb9\u0300 \u1ecd\u0301 \u1e63 \u0257 \u0199 \u01b4 \u014b \u025b \u0254",
    "\u12a0\u121b\u122d\u129b \u1275\u130d\u122d\u129b \u0939\u093f\u0928\u094d\u0926\u0940 \u09ac\u09be\u0982\u09b2\u09be "
    "\u0ba4\u0bae\u0bbf\u0bb4\u0bcd", "Hello World HELLO world hello", "\ufffd replacement \u1680 ogham",
    "don't can't I'm", "MiXeD CaSe 42nd", "tab\t\t\ttabs", "\u0000nul", "\U00020000\U0002a700x \u3400\u4e00 ext",
    "\ufeffbom a\x85b \u180e", "x\u00b2 \u00bd \u00aa\u00ba _a \u2160 x\u0663\u0664y",
]


def js_encode(tokenizer: Path, spec: TokenizerSpec, texts: list[str], tmp: Path) -> dict:
    """{"ids", "masks", "seconds"} from tokenizer.js under node (or {"error": "Name: message"})."""
    case, out = tmp / f"case-{tokenizer.parent.name}.json", tmp / f"out-{tokenizer.parent.name}.json"
    case.write_text(json.dumps({"tokenizer": str(tokenizer), "spec": dataclasses.asdict(spec), "texts": texts,
                                "out": str(out)}), encoding="utf-8")
    run = subprocess.run(["node", str(RUNNER), str(case)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(out.read_text(encoding="utf-8"))


def compare(tokenizer: Path, spec: TokenizerSpec, groups: dict[str, list[str]], tmp: Path) -> dict:
    """Per group: {"n", "exact", "rate", "failing": [(text, python ids, js ids)...]}."""
    texts = [t for g in groups.values() for t in g]
    js = js_encode(tokenizer, spec, texts, tmp)
    assert "error" not in js, js.get("error")
    tok = load_tokenizer(tokenizer, spec)
    report, i = {}, 0
    for name, group in groups.items():
        failing = []
        for text in group:
            ids, mask = tok.encode_batch([text])
            if ids[0].tolist() != js["ids"][i] or mask[0].tolist() != js["masks"][i]:
                failing.append((text, ids[0].tolist(), js["ids"][i]))
            i += 1
        report[name] = {"n": len(group), "exact": len(group) - len(failing),
                        "rate": (len(group) - len(failing)) / max(len(group), 1), "failing": failing}
    return report


def assert_all_exact(report: dict, what: str) -> None:
    print(f"\n{what}: exact-match rate per group")
    for name, r in report.items():
        print(f"  {name:>12}: {r['exact']:>6}/{r['n']:<6} = {100 * r['rate']:.2f}%")
    bad = {name: r["failing"][:5] for name, r in report.items() if r["failing"]}
    assert not bad, f"{what}: the JS tokenizer differs on:\n" + "\n".join(
        f"  [{name}] {text!r}: python {py} != js {js}" for name, rows in bad.items() for text, py, js in rows)


# --- the real tokenizer on the demo texts ---------------------------------------------------------------

def _sources_missing() -> str:
    from lugha.data import emoji_sources as src
    from lugha.errors import MissingDependencyError

    try:
        src.find_emoji_test(), src.find_cldr()
    except MissingDependencyError as e:
        return str(e)
    return ""


def demo_texts(with_keywords: bool) -> dict[str, list[str]]:
    """Per demo language: the caption of every emoji the demo uses (``lugha data demo``'s ``text``), and
    optionally every CLDR keyword (also demo text: records carry them)."""
    from lugha.data import emoji_sources as src
    from lugha.data.demo import DEFAULT_LANGS

    root, entries = src.find_cldr(), src.read_emoji_test(src.find_emoji_test())
    out = {}
    for lang in DEFAULT_LANGS:
        names = src.read_annotations(root, lang)
        anns = [names[e.cldr_key] for e in entries if e.cldr_key in names]
        texts = {a.name for a in anns} | ({k for a in anns for k in a.keywords} if with_keywords else set())
        out[lang] = sorted(texts)
    return out


@pytest.mark.slow
@pytest.mark.skipif(bool(_sources_missing()), reason=_sources_missing() or "sources found")
def test_e5_tokenizer_on_every_demo_text_in_every_language(e5_tokenizer_json, tmp_path):
    groups = demo_texts(with_keywords=True)
    report = compare(e5_tokenizer_json, E5_SPEC, groups, tmp_path)
    assert sum(r["n"] for r in report.values()) > 50_000 and len(report) >= 13
    assert_all_exact(report, "multilingual-e5 tokenizer, demo captions + keywords")


@pytest.mark.slow
@pytest.mark.skipif(bool(_sources_missing()), reason=_sources_missing() or "sources found")
def test_e5_tokenizer_on_a_built_demo_manifest_and_edge_strings(e5_tokenizer_json, demo_small, tmp_path):
    """The texts of a manifest `lugha data demo` wrote, its per-language label names, and EDGE strings,
    under both padding rules and a short max_length (truncation keeps </s>)."""
    from lugha.data import read_manifest

    groups: dict[str, list[str]] = {}
    for r in read_manifest(demo_small):
        groups.setdefault(r.lang, []).append(r.text)
    labels = demo_small.parent / "labels.json"
    if labels.is_file():
        groups["label names"] = sorted({n for names in json.loads(labels.read_text("utf-8")).values() for n in names.values()})
    groups["edge"] = EDGE
    assert len(groups) >= 14
    assert_all_exact(compare(e5_tokenizer_json, E5_SPEC, groups, tmp_path), "e5, demo manifest")
    for spec in (TokenizerSpec(max_length=8, pad_token="<pad>"), TokenizerSpec(max_length=16, prefix="query: "),
                 TokenizerSpec(max_length=12, add_special_tokens=False, padding="longest")):
        assert_all_exact(compare(e5_tokenizer_json, spec, {"edge": EDGE, "sw": groups["sw"][:50]}, tmp_path),
                         f"e5 {spec}")


def test_tiny_bundle_tokenizer(tmp_path):
    """The WordLevel + Whitespace tokenizer of the test bundle the field-app tests serve."""
    from test_runtimes_bundle import VOCAB, _tokenizer_json

    path = tmp_path / "tiny" / "tokenizer.json"
    path.parent.mkdir()
    _tokenizer_json(path)
    texts = [" ".join(VOCAB[i:i + 3]) for i in range(len(VOCAB))] + ["a photo of a cat!", "paka, mbwa; ndege?"] + EDGE
    for spec in (TokenizerSpec(max_length=8), TokenizerSpec(max_length=5, padding="longest")):
        assert_all_exact(compare(path, spec, {"tiny": texts}, tmp_path), f"tiny {spec}")


# --- other tokenizer families a bundle may carry --------------------------------------------------------

SENTENCES = ["a red apple on a table", "mtoto anacheza mpira", "ọmọdé ń ṣeré bọ́ọ̀lù", "Ça va? très bien, merci!",
             "the 3 dogs run 42 km in 2024", "hello world, hello-world... (test) [ok]", "जल्दी घर आओ", "ቡና ጠጣ",
             "ο σίσυφος σπρώχνει την πέτρα"]  # a final sigma, which a per-character lowercase keeps as σ
CORPUS = SENTENCES * 3
TEXTS = SENTENCES + [t.upper() for t in SENTENCES] + ["Foo foo FOO <mask> BAR bar hello world hello worlds"] + EDGE


def _families(tmp: Path) -> dict[str, Path]:
    from tokenizers import AddedToken, Regex, Tokenizer, models, normalizers as nz, pre_tokenizers as pt, processors, trainers

    def save(tok, name: str) -> Path:
        path = tmp / name / "tokenizer.json"
        path.parent.mkdir(parents=True)
        tok.save(str(path))
        return path

    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    out = {}
    tok = Tokenizer(models.Unigram())
    # "$&" is a literal for the Rust library, the match for JS's String.replace
    tok.normalizer = nz.Sequence([nz.NFD(), nz.StripAccents(), nz.Lowercase(), nz.Strip(), nz.Replace(Regex(r"\d+"), "$&")])
    tok.pre_tokenizer = pt.Sequence([pt.WhitespaceSplit(), pt.Metaspace(prepend_scheme="always")])
    tok.train_from_iterator(CORPUS, trainers.UnigramTrainer(vocab_size=120, special_tokens=specials, unk_token="<unk>"))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 2), ("</s>", 3)])
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=True)])
    tok.add_tokens([AddedToken("hello world"), AddedToken("Foo", normalized=True), AddedToken("BAR", normalized=False)])
    out["unigram_lower"] = save(tok, "unigram_lower")

    # Unigram fuses unknown pieces; behind these pre-tokenisers that is refused (REFUSED), so BPE runs them.
    punct = pt.Sequence([pt.Punctuation(), pt.Digits(individual_digits=True), pt.Metaspace(prepend_scheme="never"),
                         pt.Split(Regex(r"[aeiou]"), "isolated"), pt.Split("-", "removed")])
    tok = Tokenizer(models.Unigram())
    tok.normalizer = nz.Sequence([nz.NFKC(), nz.Prepend("\u2581")])
    tok.pre_tokenizer = punct
    tok.train_from_iterator(CORPUS, trainers.UnigramTrainer(vocab_size=90, special_tokens=specials, unk_token="<unk>"))
    tok.post_processor = processors.RobertaProcessing(("</s>", 3), ("<s>", 2))
    out["unigram_punct"] = save(tok, "unigram_punct")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = nz.Sequence([nz.NFKC(), nz.Prepend("\u2581")])
    tok.pre_tokenizer = punct
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=90, special_tokens=specials))
    tok.post_processor = processors.RobertaProcessing(("</s>", 3), ("<s>", 2))
    out["bpe_punct"] = save(tok, "bpe_punct")

    tok = Tokenizer(models.BPE())  # GPT-2's byte-level BPE
    tok.pre_tokenizer = pt.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<pad>"],
                                                        initial_alphabet=pt.ByteLevel.alphabet()))
    out["bpe_bytelevel"] = save(tok, "bpe_bytelevel")

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=12))
    tok.normalizer = nz.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pt.BertPreTokenizer()
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=150, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"]))
    tok.post_processor = processors.BertProcessing(("[SEP]", 3), ("[CLS]", 2))
    out["wordpiece_bert"] = save(tok, "wordpiece_bert")

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.normalizer = nz.Sequence([nz.NFC(), nz.Lowercase()])
    tok.pre_tokenizer = pt.Sequence([pt.Split(Regex(r"\s+"), "removed"), pt.Digits(), pt.Whitespace(), pt.Punctuation()])
    tok.train_from_iterator(CORPUS, trainers.WordLevelTrainer(special_tokens=specials))
    out["wordlevel_split"] = save(tok, "wordlevel_split")
    return out


SUPPORTED = ("unigram_lower", "bpe_punct", "bpe_bytelevel", "wordpiece_bert", "wordlevel_split")


def test_other_tokenizer_families(tmp_path):
    families = _families(tmp_path)
    for name in SUPPORTED:
        for prefix in ("", "q: "):
            spec = TokenizerSpec(max_length=24, padding="longest", prefix=prefix)
            assert_all_exact(compare(families[name], spec, {name: TEXTS}, tmp_path), f"{name} {spec}")


def _edited(path: Path, name: str, edit) -> Path:
    data = json.loads(path.read_text("utf-8"))
    edit(data)
    out = path.parent.parent / name / "tokenizer.json"
    out.parent.mkdir()
    out.write_text(json.dumps(data), encoding="utf-8")
    return out


def _splits(**changes):
    return lambda d: [p.update(changes) for p in d["pre_tokenizer"]["pretokenizers"] if p["type"] == "Split"]


# What the JS library runs differently from the Rust one, each refused by name (a change of the library
# that runs it as Rust does shows here first): tokenizer family to edit, the edit, what the error names.
REFUSED = {
    "metaspace_first": ("unigram_lower", lambda d: d["pre_tokenizer"]["pretokenizers"][1].update(
        prepend_scheme="first"), 'Metaspace with prepend_scheme "first"'),
    "single_word": ("unigram_lower", lambda d: next(t for t in d["added_tokens"] if t["content"] == "hello world").update(
        single_word=True), "single_word"),
    "byte_fallback": ("unigram_lower", lambda d: d["model"].update(byte_fallback=True), "Unigram with byte_fallback"),
    "unk_fused_across_words": ("unigram_punct", lambda d: None, "Unigram behind pre-tokenizer Sequence"),
    "split_merged_with_previous": ("bpe_punct", _splits(behavior="MergedWithPrevious"), "Split with behavior MergedWithPrevious"),
    "split_merged_with_next": ("bpe_punct", _splits(behavior="MergedWithNext"), "Split with behavior MergedWithNext"),
    "split_contiguous": ("bpe_punct", _splits(behavior="Contiguous"), "Split with behavior Contiguous"),
    "split_inverted_isolated": ("bpe_punct", _splits(invert=True), "Split with behavior Isolated and invert"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_unsupported_tokenizer_is_reported_not_guessed(case, tmp_path):
    family, edit, named = REFUSED[case]
    path = _edited(_families(tmp_path)[family], case, edit)
    from tokenizers import Tokenizer

    Tokenizer.from_file(str(path))  # a tokenizer.json the Rust library runs, so one a bundle may carry
    out = js_encode(path, TokenizerSpec(max_length=8), ["hello"], tmp_path)
    assert out.get("error", "").startswith("UnsupportedTokenizer") and named in out["error"], out


@pytest.mark.skipif(shutil.which("node") is None or not __import__("importlib").util.find_spec("sentencepiece"),
                    reason="needs sentencepiece")
def test_sentencepiece_precompiled_charsmap_is_refused(tmp_path):
    """A SentencePiece model trained with nmt_nfkc (XLM-R's normalisation), its charsmap in a Precompiled
    normaliser: the form hub XLM-R tokenizers take. The JS library does not read the charsmap (NFKC and a
    few replacements stand in: with XLM-R's hub normaliser, 5 of the 70,028 demo texts, Indic words with
    U+200D, get other ids), so the phone refuses it and embeds text on the server."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb
    from tokenizers import Tokenizer, models, normalizers as nz, pre_tokenizers as pt, processors

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CORPUS + EDGE[:20]), encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "spm"), vocab_size=200,
                                   normalization_rule_name="nmt_nfkc", model_type="unigram", minloglevel=2,
                                   hard_vocab_limit=False, character_coverage=0.98)
    proto = pb.ModelProto()
    proto.ParseFromString((tmp_path / "spm.model").read_bytes())
    vocab = [(p.piece, p.score) for p in proto.pieces]
    tok = Tokenizer(models.Unigram(vocab, unk_id=[p.type for p in proto.pieces].index(2)))
    tok.normalizer = nz.Sequence([nz.Precompiled(proto.normalizer_spec.precompiled_charsmap), nz.Replace(" {2,}", " ")])
    tok.pre_tokenizer = pt.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 1), ("</s>", 2)])
    path = tmp_path / "spm" / "tokenizer.json"
    path.parent.mkdir()
    tok.save(str(path))
    out = js_encode(path, TokenizerSpec(max_length=32, padding="longest", pad_token="<unk>"), ["hello"], tmp_path)
    assert out.get("error", "").startswith("UnsupportedTokenizer") and "Precompiled" in out["error"], out
