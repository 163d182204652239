"""A large, diverse training prompt set built from text that ships on the machine, never from a benchmark.

`python -m spectr_lib.distill.corpus --n 24000` writes data/distill/prompts.jsonl.gz: one record per prompt
{id, category, source, licence, split, prompt}. Passages come from
- the Python documentation topics and docstrings of the standard library (PSF-2.0) and of installed
  permissively licensed packages (licence read from each package's metadata),
- message catalogues of Debian packages in German, French, Spanish, Italian and Portuguese (each under its
  package's free licence), as sentences to translate,
- READMEs of Debian packages under /usr/share/doc,
and are wrapped in task templates (summarise, answer from a passage, extract, translate, explain or write
code, math word problems, and the chat/writing/role-play templates of `prompt_set`). Spec-Bench, MT-bench,
GSM8K, HumanEval and other public benchmark prompts are never read. About 2 % of the prompts (by a hash of
the text) form the held-out split that draft evaluation uses.
"""
from __future__ import annotations

import argparse
import ast
import gettext
import gzip
import hashlib
import importlib.metadata as md
import json
import random
import re
import sysconfig
from pathlib import Path
from typing import Iterator

from ..paths import DATA_DIR
from .prompt_set import make_prompts
from ..argtypes import SEED, count

CORPUS_FILE = DATA_DIR / "distill" / "prompts.jsonl.gz"
PERMISSIVE = ("bsd", "mit", "apache", "psf", "python software foundation", "isc", "mpl", "mozilla")
PACKAGES = ("numpy", "scipy", "torch", "transformers", "matplotlib", "cvxpy", "tqdm", "jupyterlab", "ipywidgets",
            "safetensors", "tokenizers", "networkx", "sympy", "pandas", "jinja2", "requests", "urllib3")
LANG_NAMES = {"de": "German", "fr": "French", "es": "Spanish", "it": "Italian", "pt": "Portuguese"}
HELD_OUT_PERCENT = 2

TASKS = {
    "summarization": ["Summarize the following text.\n\n{p}", "Write a short summary of this document:\n\n{p}",
                      "{p}\n\nSummarize the text above in a few sentences.", "Give the main points of this text as a list.\n\n{p}",
                      "Read the text and write a one-paragraph summary for a busy reader.\n\nText: {p}"],
    "rag": ["Answer the question using only the passage.\n\nPassage: {p}\n\nQuestion: What does the passage say about {w}?",
            "Context:\n{p}\n\nBased on the context, explain what {w} means.",
            "{p}\n\nUsing the information above, answer: why is {w} mentioned, and what is it used for?",
            "Here is some documentation:\n{p}\n\nQuestion: How would I use {w}? Answer briefly."],
    "extraction": ["List every technical term that appears in this text.\n\n{p}",
                   "Extract the names of functions, options or commands mentioned in the text below as a bullet list.\n\n{p}",
                   "Read the passage and write three questions it answers.\n\n{p}",
                   "Rewrite this text in simpler words for a beginner:\n\n{p}"],
    "translation_to_en": ["Translate {lang} to English: {p}", "Translate the following {lang} text into English.\n\n{p}",
                          "What does this {lang} sentence mean in English? {p}", "Please translate into English:\n{p}"],
    "translation_from_en": ["Translate into {lang}: {p}", "Translate the following English text to {lang}.\n\n{p}"],
    "code": ["Explain what this Python code does, step by step.\n\n```python\n{p}\n```",
             "Write a docstring for this function.\n\n```python\n{p}\n```",
             "Is there a bug in this code? Review it.\n\n```python\n{p}\n```",
             "Write unit tests for this function.\n\n```python\n{p}\n```"],
    "code_write": ["Write a Python function that does the following: {p}", "Implement this in Python: {p}",
                   "How would I write code for this? {p}"],
}


def _clean(text: str) -> str:
    text = re.sub(r"[`*]{1,2}|:\w+:|\.\. \w+::.*", "", text)
    return re.sub(r"[ \t]+", " ", text).strip()


def _paragraphs(text: str) -> list[str]:
    paras = [re.sub(r"\s*\n\s*", " ", _clean(p)) for p in re.split(r"\n\s*\n", text)]
    return [p for p in paras if len(p) >= 60 and sum(c.isalpha() for c in p) > 0.6 * len(p)]


def _licence(dist: str) -> str | None:
    try:
        meta = md.metadata(dist)
    except md.PackageNotFoundError:
        return None
    text = " ".join([meta.get("License") or "", meta.get("License-Expression") or "",
                     *[c for c in meta.get_all("Classifier") or [] if c.startswith("License")]])[:300]
    return text if any(k in text.lower() for k in PERMISSIVE) else None


def python_docs() -> Iterator[tuple[str, str, str]]:
    """(source, licence, document) from the Python documentation topics."""
    import pydoc_data.topics as topics

    for name, text in sorted(topics.topics.items()):
        yield f"python-docs:{name}", "PSF-2.0", text


def docstrings_and_code(root: Path, source: str, licence: str, limit: int) -> Iterator[tuple[str, str, str]]:
    """Docstrings (kind 'doc') and function bodies (kind 'code') of the .py files under root."""
    n = 0
    for path in sorted(root.rglob("*.py")):
        if n >= limit or "test" in path.parts[-1] or "tests" in path.parts:
            continue
        try:
            src = path.read_text(encoding="utf-8")
            tree = ast.parse(src)
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Module)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= 200:
                    n += 1
                    yield f"{source}:{path.relative_to(root)}", licence, "doc\0" + doc
            if isinstance(node, ast.FunctionDef) and 6 <= node.end_lineno - node.lineno <= 35:
                n += 1
                yield f"{source}:{path.relative_to(root)}", licence, "code\0" + ast.get_source_segment(src, node)


def message_catalogues(locale_root: Path = Path("/usr/share/locale")) -> Iterator[tuple[str, str, str]]:
    """(source, licence, 'lang\\0sentence') from the .mo files of installed Debian packages."""
    for lang in LANG_NAMES:
        for mo in sorted((locale_root / lang / "LC_MESSAGES").glob("*.mo")):
            try:
                with open(mo, "rb") as fh:
                    catalog = gettext.GNUTranslations(fh)._catalog
            except (OSError, UnicodeDecodeError, gettext.error if hasattr(gettext, "error") else OSError, Exception):
                continue
            for key, value in catalog.items():
                if isinstance(key, str) and isinstance(value, str) and 40 <= len(value) <= 400 and "%" not in value:
                    yield f"debian-locale:{lang}/{mo.stem}", f"licence of Debian package {mo.stem}", f"{lang}\0{value.strip()}"


def debian_readmes(doc_root: Path = Path("/usr/share/doc")) -> Iterator[tuple[str, str, str]]:
    """(source, licence, document) from README files of installed Debian packages."""
    for path in sorted(doc_root.glob("*/README*")):
        try:
            raw = path.read_bytes()
            text = (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode("utf-8")
        except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile):
            continue
        yield f"debian-doc:{path.parent.name}/{path.name}", f"licence of Debian package {path.parent.name}", text


def _passages(docs: list[tuple[str, str, str]], rng: random.Random, lo: int, hi: int) -> list[tuple[str, str, str]]:
    """Runs of consecutive paragraphs of one document, lo..hi characters each."""
    out = []
    for source, licence, text in docs:
        paras, i = _paragraphs(text), 0
        while i < len(paras):
            want, chunk = rng.randint(lo, hi), []
            while i < len(paras) and sum(map(len, chunk)) < want:
                chunk.append(paras[i])
                i += 1
            passage = "\n\n".join(chunk)[: hi + 400]
            if len(passage) >= lo:
                out.append((source, licence, passage))
    return out


def _keyword(passage: str, rng: random.Random) -> str:
    words = re.findall(r"\b[A-Za-z_][A-Za-z0-9_.]{5,}\b", passage)
    return rng.choice(words) if words else "this"


def math_word_problem(rng: random.Random) -> str:
    """A multi-step arithmetic word problem with fresh names and numbers (written here, not from a benchmark)."""
    from .prompt_set import NAMES, PLACES

    n1, n2 = rng.sample(NAMES, 2)
    a, b, c, d = rng.randint(2, 90), rng.randint(2, 40), rng.randint(2, 12), rng.randint(1, 9)
    item = rng.choice(["stickers", "marbles", "books", "cupcakes", "stamps", "seashells", "pencils", "tickets"])
    forms = [
        f"{n1} has {a} {item}. She buys {c} packs with {b} {item} each and gives {d} to {n2}. How many {item} does she have now?",
        f"A bakery sells {a} loaves on Monday and {c} times as many on Tuesday. Each loaf costs {d} dollars. How much money did it make on both days?",
        f"{n1} walks {c} km every day for {b} days, then {d} km a day for {a} days. How far did {n1} walk in total?",
        f"A train from {rng.choice(PLACES)} carries {a * c} passengers. At the first stop {b} get off and {d} get on; at the second stop half of the passengers leave. How many remain?",
        f"{n1} saves {b} dollars a week. {n2} saves {c} dollars a week more than {n1}. After {d} weeks, how much have they saved together?",
        f"A garden has {c} rows of {a} plants. {n1} picks {b} percent of them. How many plants are left?",
        f"{n1} reads {c} pages on the first day and {d} more pages each day than the day before. How many pages has she read after {b % 7 + 3} days?",
    ]
    return rng.choice(forms) + rng.choice(["", " Show your work.", " Explain step by step.", " Think step by step."])


def build(n: int, seed: int = 0, sources: dict | None = None) -> list[dict]:
    """n distinct prompt records, shuffled, mixed over the task categories (see the module docstring)."""
    rng = random.Random(seed)
    sources = sources if sources is not None else gather_sources()
    docs, code, sentences = sources["docs"], sources["code"], sources["sentences"]
    long_p = _passages(docs, rng, 600, 2600)
    short_p = _passages(docs, rng, 150, 450)
    share = {"summarization": 0.16, "rag": 0.16, "extraction": 0.07, "translation_to_en": 0.14,
             "translation_from_en": 0.04, "code": 0.08, "code_write": 0.05, "math_word": 0.10, "chat": 0.20}
    out: list[dict] = []
    seen: set[str] = set()

    def add(category: str, source: str, licence: str, prompt: str) -> None:
        if prompt not in seen:
            seen.add(prompt)
            out.append({"category": category, "source": source, "licence": licence, "prompt": prompt})

    for cat, frac in share.items():
        want, start = int(round(frac * n)), len(out)
        for _ in range(20 * want):
            if len(out) - start >= want:
                break
            if cat in ("summarization", "rag", "extraction") and long_p:
                src, lic, p = rng.choice(long_p if cat != "extraction" else short_p + long_p)
                add(cat, src, lic, rng.choice(TASKS[cat]).format(p=p, w=_keyword(p, rng)))
            elif cat == "translation_to_en" and sentences:
                group = [rng.choice(sentences)]
                lang = group[0][2].split("\0")[0]
                pool = [s for s in rng.sample(sentences, min(8, len(sentences))) if s[2].startswith(lang + "\0")]
                group += pool[: rng.randint(0, 3)]
                text = " ".join(s[2].split("\0")[1] for s in group)
                add("translation", group[0][0], group[0][1], rng.choice(TASKS[cat]).format(lang=LANG_NAMES[lang], p=text))
            elif cat == "translation_from_en" and short_p:
                src, lic, p = rng.choice(short_p)
                add("translation", src, lic, rng.choice(TASKS[cat]).format(lang=rng.choice(list(LANG_NAMES.values())), p=p))
            elif cat == "code" and code:
                src, lic, c = rng.choice(code)
                add("coding", src, lic, rng.choice(TASKS[cat]).format(p=c))
            elif cat == "code_write" and short_p:
                src, lic, p = rng.choice([d for d in short_p[:20000] if d[0].startswith(("stdlib", "python-docs", "pkg"))] or short_p)
                add("coding", src, lic, rng.choice(TASKS[cat]).format(p=p.split(". ")[0].rstrip(".") + "."))
            elif cat == "math_word":
                add("math_reasoning", "template", "Apache-2.0 (this project)", math_word_problem(rng))
        if cat == "chat":
            for r in make_prompts(want, seed=seed + 7):
                add(r["category"], "template", "Apache-2.0 (this project)", r["prompt"])
    rng.shuffle(out)
    for i, r in enumerate(out):
        h = int(hashlib.sha1(r["prompt"].encode()).hexdigest()[:8], 16)
        r.update(id=i, split="heldout" if h % 100 < HELD_OUT_PERCENT else "train")
    return out


def gather_sources(max_docstrings: int = 60000) -> dict:
    """Documents, code snippets and foreign-language sentences from the machine (see the module docstring)."""
    docs, code = list(python_docs()), []
    roots = [(Path(sysconfig.get_paths()["stdlib"]), "stdlib", "PSF-2.0")]
    for name in PACKAGES:
        lic = _licence(name)
        try:
            import importlib.util

            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if lic and spec and spec.submodule_search_locations:
            roots.append((Path(list(spec.submodule_search_locations)[0]), f"pkg-{name}", lic))
    for root, source, lic in roots:
        for src, licence, item in docstrings_and_code(root, source, lic, max_docstrings // len(roots)):
            kind, text = item.split("\0", 1)
            (docs if kind == "doc" else code).append((src, licence, text))
    docs += list(debian_readmes())
    return {"docs": docs, "code": code, "sentences": list(message_catalogues())}


def write(records: list[dict], path: Path = CORPUS_FILE) -> None:
    """Write the records as gzipped JSON lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")


def read(path: Path = CORPUS_FILE, split: str | None = None) -> list[dict]:
    """The prompt records (optionally one split: 'train' or 'heldout')."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} not found: build it with `python -m spectr_lib.distill.corpus`")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    return [r for r in rows if split is None or r["split"] == split]


def main(argv: list[str] | None = None) -> None:
    """Build and write the prompt corpus; print its make-up."""
    ap = argparse.ArgumentParser(prog="python -m spectr_lib.distill.corpus", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=count(1), default=24000, help="number of prompts")
    ap.add_argument("--seed", type=SEED, default=0)
    ap.add_argument("--out", type=Path, default=CORPUS_FILE)
    args = ap.parse_args(argv)
    records = build(args.n, args.seed)
    write(records, args.out)
    cats: dict[str, int] = {}
    for r in records:
        cats[r["category"]] = cats.get(r["category"], 0) + 1
    print(f"{len(records)} prompts -> {args.out}: " + ", ".join(f"{c} {n}" for c, n in sorted(cats.items())))


if __name__ == "__main__":
    main()
