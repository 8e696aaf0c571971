"""Token ids and decoded text from transformers' fast tokenizer, the reference for mlx-node's Tokenizer.

Usage: tokenizer_reference.py SPEC_JSON OUT_JSON
  SPEC_JSON: [{"name": ..., "dir": ...}, ...] (Hugging Face tokenizer directories)

For each tokenizer, a seeded corpus (make_corpus, the same for every tokenizer, plus strings with that
tokenizer's own special tokens written in the text) is encoded by `AutoTokenizer.from_pretrained(dir)`
with and without special tokens, and decoded with and without skipping special tokens
(clean_up_tokenization_spaces=False, as mlx-node never cleans up). The ids of `tokenizer.json` run as
it is (the Rust `tokenizers.Tokenizer`) are recorded too where they differ: transformers 5 rebuilds
the pipeline of model-specific classes (LlamaTokenizer, GemmaTokenizer, ...) in code, so the two can
disagree, and the report names such strings.
"""
import json
import os
import random
import shutil
import sys
import tempfile

CORPUS_SEED = 20261201
CORPUS_SIZE = 2000

CODE = [
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "for (let i = 0; i < arr.length; i++) {\n\tconsole.log(`${i}: ${arr[i]}`);\n}",
    "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 42); return 0; }",
    "fn main() -> Result<(), Box<dyn Error>> {\n    let v: Vec<u8> = vec![0xFF; 16];\n    Ok(())\n}",
    "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(\"héllo\")\n}",
    "SELECT u.id, COUNT(*) AS n FROM users u LEFT JOIN orders o ON o.user_id = u.id GROUP BY u.id HAVING n > 3;",
    "find . -name '*.log' -mtime +7 -exec rm {} \\; && echo \"done\" >> /tmp/out.txt 2>&1",
    "<div class=\"card\">\n  <p>&nbsp;&lt;tag&gt; &amp; more</p>\n</div>",
    "{\"command\": \"ls -la\", \"explanation\": \"lists files\", \"risk\": \"low\"}",
    "    if (x != null && y >= 0x1F) { z <<= 2; } else { z ||= -1; }",
    "class Foo(Bar):\n    @property\n    def baz(self) -> dict[str, int]:\n        ...\n",
    "const re = /^(?:[a-z0-9_.-]+)@(?:\\w+\\.)+[a-z]{2,}$/iu;",
    "x = [i**2 for i in range(10) if i % 3 == 0]  # squares",
    "\\begin{equation} E = mc^2 \\end{equation}",
    "sudo apt-get install -y build-essential\r\nmake -j$(nproc)",
    "git log --oneline --graph --decorate | head -n 20",
    "matrix = [[1, 2, 3],\n          [4, 5, 6]]\n",
    "public static void main(String[] args) throws IOException {}",
    "awk -F: '{ print $1 \"\\t\" $NF }' /etc/passwd | sort -u",
    "// TODO: fix this!!!\n/* multi\n   line */",
]
WORDS = (
    "the quick brown fox jumps over lazy dog Hello world I'm you're we'll they've she'd don't CAN'T "
    "tokenization transformers é naïve café résumé coöperate Straße Ärger fiancée über façade "
    "internationalization antidisestablishmentarianism a an of to in is it that on for as with "
    "HTTP URL JSON API GPU CPU iPhone McDonald's O'Reilly e.g. i.e. etc. Mr. Dr. U.S.A."
).split()
UNICODE = [
    "日本語のテキスト", "中文分词测试", "한국어 문장입니다", "Привет, мир", "Γειά σου Κόσμε", "مرحبا بالعالم",
    "שלום עולם", "नमस्ते दुनिया", "สวัสดีชาวโลก", "Xin chào thế giới", "ᚠᛇᚻ᛫ᛒᛦᚦ", "ⓐⓑⓒ ①②③",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕄𝕒𝕥𝕙", "e\u0301 a\u0300 o\u0308 n\u0303", "Z\u0351\u036b\u0343a\u0310\u0301l\u0363g\u0489o\u0352",
    "ﬁ ﬂ ﬀ Ⅻ ㎏ ℃ ™ ©", "\u200b\u200c\u200d\ufeff", "\u00a0non\u00a0breaking\u2003em\u2009thin",
    "¿Qué? ¡Sí! «citation» „Zitat“ ‘single’ “double”", "…—–•·", "\u0000\u0001\u0007\u001b[0m",
    "ｆｕｌｌｗｉｄｔｈ　ｓｐａｃｅ", "Ǆǅǆ İı ß ẞ",
]
EMOJI = [
    "😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇯🇵🇫🇷", "1️⃣#️⃣", "❤️‍🔥", "🧑🏿‍💻", "🫠", "👩‍❤️‍💋‍👨", "☕", "🐍🦀", "🤷‍♀️", "✍🏻",
]
NUMBERS = [
    "0", "7", "42", "123", "1234", "12345", "123456789", "3.14159", "-0.5", "1e-10", "6.022e23", "1,000,000",
    "1.000.000,50", "$19.99", "100%", "2026-12-01", "13:55:00", "0xDEADBEEF", "0b1010", "+1 (555) 010-9999",
    "v1.2.3", "10⁶", "½ ¾", "٣٤٥", "१२३", "000123",
]
PUNCT = ["!!!", "???", "...", "?!", "--", "==", "->", "=>", "::", "&&", "||", "<<", ">>", "((", "))", "[]", "{}", "\"", "'", "`", "~~~", "@#$%^&*"]


def whitespace(rng):
    kind = rng.randrange(8)
    if kind == 0:
        return " " * rng.randint(1, 17)
    if kind == 1:
        return "\t" * rng.randint(1, 4)
    if kind == 2:
        return "\n" * rng.randint(1, 5)
    if kind == 3:
        return "\r\n" * rng.randint(1, 3)
    if kind == 4:
        return rng.choice([" \n", "\n ", "\t \n", "  \t", "\n\t\t", " \r\n "])
    return " "


def fragment(rng):
    pool = rng.choices([WORDS, CODE, UNICODE, EMOJI, NUMBERS, PUNCT], weights=[40, 8, 14, 10, 16, 8])[0]
    return rng.choice(pool)


def make_corpus():
    """The shared corpus: fixed edge cases, then seeded random mixes of fragments and whitespace."""
    fixed = ["", " ", "  ", "\n", "\t", "\r\n", " \n ", "a", " a", "  a", "a ", "a  ", "\n\na", "Hello", " Hello", "Hello world",
             " Hello world", "hello  world", "   leading and trailing   "]
    fixed += CODE + UNICODE + EMOJI + NUMBERS + PUNCT
    fixed += [" " + s for s in NUMBERS[:10]] + [" " + e for e in EMOJI] + ["\n" + c for c in CODE[:5]]
    rng = random.Random(CORPUS_SEED)
    corpus = list(fixed)
    while len(corpus) < CORPUS_SIZE:
        parts = []
        for i in range(rng.randint(1, 8)):
            if i > 0 or rng.random() < 0.2:
                parts.append(whitespace(rng) if rng.random() < 0.7 else "")
            parts.append(fragment(rng))
        if rng.random() < 0.1:
            parts.append(whitespace(rng))
        corpus.append("".join(parts))
    return corpus


def special_strings(name, specials):
    """Strings with the tokenizer's own special tokens in them, seeded by the tokenizer name."""
    rng = random.Random(f"{CORPUS_SEED}:{name}")
    out = []
    for token in specials:
        out += [token, " " + token, token + " ", f"x{token}y", f"a {token} b", f"\n{token}\n", token + token]
    while len(out) < 7 * len(specials) + 100:
        parts = []
        for _ in range(rng.randint(2, 6)):
            parts.append(rng.choice(specials) if rng.random() < 0.4 else fragment(rng))
            parts.append(whitespace(rng) if rng.random() < 0.5 else "")
        out.append("".join(parts))
    return out


def special_tokens_of(tok, limit=24):
    """The named special tokens and the added tokens marked special (first `limit`, for large reserved ranges)."""
    names = [t for t in tok.all_special_tokens]
    for tid, added in sorted(tok.added_tokens_decoder.items()):
        if added.special and added.content not in names:
            names.append(added.content)
    return names[:limit]


def repaired_copy(directory, workdir):
    """A copy whose tokenizer.json merges the Rust parser accepts: string merges that do not split into
    exactly two parts (tokens with a literal space, which the SentencePiece normalizer makes impossible
    to reach) are dropped. Returns (path, number dropped), or (directory, 0) when nothing needs fixing."""
    path = os.path.join(directory, "tokenizer.json")
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    merges = data.get("model", {}).get("merges")
    if not isinstance(merges, list):
        return directory, 0
    kept = [m for m in merges if not (isinstance(m, str) and len(m.split(" ")) != 2)]
    if len(kept) == len(merges):
        return directory, 0
    data["model"]["merges"] = kept
    copy = os.path.join(workdir, os.path.basename(directory.rstrip("/")))
    shutil.copytree(directory, copy)
    with open(os.path.join(copy, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False)
    return copy, len(merges) - len(kept)


def reference(name, directory, corpus, workdir):
    from tokenizers import Tokenizer as RawTokenizer
    from transformers import AutoTokenizer

    source, dropped = repaired_copy(directory, workdir)
    tok = AutoTokenizer.from_pretrained(source)
    raw = RawTokenizer.from_file(os.path.join(source, "tokenizer.json"))
    specials = special_tokens_of(tok)
    texts = corpus + special_strings(name, specials)
    # How many ids transformers adds before and after a sequence (the same for every text).
    probe, probe_full = tok.encode("a", add_special_tokens=False), tok.encode("a", add_special_tokens=True)
    prefix = next(i for i in range(len(probe_full)) if probe_full[i : i + len(probe)] == probe)
    suffix = len(probe_full) - prefix - len(probe)
    cases = []
    for text in texts:
        plain = tok.encode(text, add_special_tokens=False)
        case = {
            "text": text,
            "ids": plain,
            "idsSpecial": tok.encode(text, add_special_tokens=True),
            "decoded": tok.decode(plain, skip_special_tokens=False, clean_up_tokenization_spaces=False),
            "decodedSkip": tok.decode(plain, skip_special_tokens=True, clean_up_tokenization_spaces=False),
        }
        raw_ids = raw.encode(text, add_special_tokens=False).ids
        if raw_ids != plain:
            # The same special tokens around the sequence as transformers adds, around tokenizer.json's ids.
            end = len(case["idsSpecial"]) - suffix
            case["tokenizerJsonIds"] = raw_ids
            case["tokenizerJsonIdsSpecial"] = case["idsSpecial"][:prefix] + raw_ids + case["idsSpecial"][end:]
        cases.append(case)
    return {
        "name": name,
        "class": type(tok).__name__,
        "repairedMerges": dropped,
        "specialTokens": specials,
        "cases": cases,
    }


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    import tokenizers
    import transformers

    corpus = make_corpus()
    with tempfile.TemporaryDirectory() as workdir:
        result = {
            "versions": {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__},
            "corpusSeed": CORPUS_SEED,
            "tokenizers": [reference(entry["name"], entry["dir"], corpus, workdir) for entry in spec],
        }
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False)


if __name__ == "__main__":
    main()
