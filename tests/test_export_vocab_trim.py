"""--trim-vocab: the covered text tokenizes to the remapped ids and embeds exactly as before."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lugha.records import read_manifest  # noqa: E402
from lugha.export.vocab_trim import VocabTrimError, ids_to_keep, trim_source, trim_tokenizer_json  # noqa: E402


@pytest.mark.slow
def test_trim_keeps_covered_text_identical(demo_small):
    from lugha.export.source import untrained_source

    langs = ("ha", "sw", "yo")
    src = untrained_source("test-tiny", demo_small, langs)
    texts = [r.text for r in read_manifest(demo_small) if r.lang in langs]
    old_tok, old_rows = src.tokenizer, src.model.text_tower.net.get_input_embeddings().num_embeddings
    with torch.no_grad():
        before = src.model.encode_text(*old_tok(texts)).numpy()
    report = trim_source(src)
    assert report["kept"] < old_rows / 50 and report["table_mb_after"] < report["table_mb_before"] / 50
    assert report["languages"] == list(langs) and report["max_abs_diff"] <= 1e-6
    new_tok = src.tokenizer
    assert new_tok.vocab_size == report["kept"] == src.model.text_tower.net.get_input_embeddings().num_embeddings
    with torch.no_grad():
        after = src.model.encode_text(*new_tok(texts)).numpy()
    assert np.abs(before - after).max() <= 1e-6
    # same tokens, new numbers: the pieces of every text are unchanged
    for text in texts[:20]:
        a = old_tok.backend.encode(text)
        b = new_tok.backend.encode(text)
        assert a.tokens == b.tokens and max(b.ids) < report["kept"]
    # the trimmed tokenizer.json is a plain tokenizers file that the kit's loader reads
    from lugha.tokenizer import TokenizerSpec, TextTokenizer
    from tokenizers import Tokenizer

    again = TextTokenizer(Tokenizer.from_str(new_tok.backend.to_str()), TokenizerSpec(max_length=16))
    assert again.pad_id == new_tok.pad_id


def _wordlevel(vocab):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
    tok.post_processor = processors.BertProcessing(("[SEP]", vocab["[SEP]"]), ("[CLS]", vocab["[CLS]"]))
    tok.enable_padding(pad_id=vocab["[PAD]"], pad_token="[PAD]")
    return json.loads(tok.to_str())


def test_wordlevel_tokenizer_is_renumbered_consistently():
    from tokenizers import Tokenizer

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "apple", "mango", "mbwa", "paka", "omo", "ile"]
    data = _wordlevel({w: i for i, w in enumerate(words)})
    full = Tokenizer.from_str(json.dumps(data))
    used = set(full.encode("mbwa omo").ids)
    keep = ids_to_keep(data, used)
    assert keep == [0, 1, 2, 3, 6, 8]
    small = Tokenizer.from_str(json.dumps(trim_tokenizer_json(data, keep)))
    assert small.encode("mbwa omo").tokens == full.encode("mbwa omo").tokens
    assert small.encode("mbwa omo").ids == [keep.index(i) for i in full.encode("mbwa omo").ids]
    assert small.encode("apple").tokens == ["[CLS]", "[UNK]", "[SEP]"]  # dropped words become unknown


def test_bpe_is_refused():
    with pytest.raises(VocabTrimError, match="BPE"):
        trim_tokenizer_json({"model": {"type": "BPE", "vocab": {}, "merges": []}}, [0])
