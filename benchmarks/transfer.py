"""The transfer study's fast path, timed in one run: the ``module`` task with the English-only probe for 8 target
languages (no interventions) against the plain HF body forward over exactly the texts the study reads.

Prints both times, ``module_probe_vs_hf_body_ratio: <x>`` (HF seconds / study seconds) and, last,
``module_probe_seconds: <s>`` (the issue's bar: <= 300 on 2 cores). The study's forward stops after the deepest
layer it reads (every candidate layer while choosing, the chosen one after), the reference runs the whole body, so
the ratio can exceed 1: it says how much of a full read of the same texts the study costs.

    python benchmarks/transfer.py [--targets hi,es,de,zh,ko,ja,ar,fr] [--n-eval 256]
"""

from __future__ import annotations

import argparse
import time

import torch

from workbench.models import load_model
from workbench.readouts import length_sorted_batches
from workbench.transfer.probe import ProbeConfig
from workbench.transfer.run import run_transfer
from workbench.transfer.study import TransferConfig
from workbench.transfer.tasks import module_rows, module_training_rows


def study_texts(config: TransferConfig) -> list[str]:
    """Every text the module study with the probe reads: English train and dev, and per target its eval rows in
    the target and in English."""
    texts = [row.text["en"] for row in module_training_rows(config.n_train)]
    texts += [row.text["en"] for row in module_training_rows(config.n_dev, split="dev")]
    for target in config.targets:
        rows = module_rows(target, "eval", n=config.n_eval)
        texts += [row.text[target] for row in rows] + [row.text["en"] for row in rows]
    return texts


def hf_body_seconds(model, texts: list[str], probe: ProbeConfig) -> float:
    """The plain HF decoder body over ``texts``, batched and truncated as the probe reads them."""
    started = time.perf_counter()
    with torch.inference_mode():
        for _, tokens, attention_mask in length_sorted_batches(model.tokenizer, texts, batch_size=probe.batch_size,
                                                                max_length=probe.max_length):
            model.hf_model.model(input_ids=tokens, attention_mask=attention_mask)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="hi,es,de,zh,ko,ja,ar,fr")
    parser.add_argument("--n-eval", type=int, default=256)
    args = parser.parse_args()
    model = load_model(backend="hf")
    config = TransferConfig(targets=tuple(args.targets.split(",")), interventions=("none",), n_eval=args.n_eval)
    started = time.perf_counter()
    result = run_transfer(model, config, progress=False)
    study = time.perf_counter() - started
    texts = study_texts(config)
    hf = hf_body_seconds(model, texts, config.probe)
    accuracy = {row.language: round(row.value, 3) for row in result.rows if row.metric == "accuracy"}
    print(f"targets {','.join(config.targets)}; {len(texts)} texts; accuracy {accuracy}")
    print(f"study {study:.1f} s; HF body forward over the same texts {hf:.1f} s")
    print(f"module_probe_vs_hf_body_ratio: {hf / study:.3f}")
    print(f"module_probe_seconds: {study:.1f}")


if __name__ == "__main__":
    main()
