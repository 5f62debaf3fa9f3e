"""SAEs and language features on the embedded model, end to end, with timings: train, evaluate, analyse.

Trains one SAE per site with the default :class:`workbench.saes.SAETrainConfig` (one shared harvest), evaluates
them on held-out text (FVU, L0, dead share, CE recovered vs zero and mean ablation), runs the feature analysis for
a target language and prints one JSON summary (also written to ``OUT/summary.json``).

    python benchmarks/saes.py --out runs/saes --sites 6.resid_post,6.mlp_out,6.mlp_post --target hi
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from workbench.artifacts import atomic_write_json
from workbench.features import FeatureAnalysisConfig, run_feature_analysis, write_report
from workbench.models import load_model
from workbench.saes import SAETrainConfig, evaluate_sae_dir, load_sae_dir, train_saes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sites", default="6.resid_post,6.mlp_out")
    parser.add_argument("--target", default="hi")
    parser.add_argument("--architecture", default="topk")
    parser.add_argument("--skip-features", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch threads while training")
    args = parser.parse_args()

    model = load_model(backend="hf")
    sites = [s.strip() for s in args.sites.split(",") if s.strip()]
    started = time.perf_counter()
    trained = train_saes(model, sites, args.out / "saes", SAETrainConfig(architecture=args.architecture),
                         threads=args.threads)
    summary: dict = {"train_wall_seconds": round(time.perf_counter() - started, 1), "sites": {}}
    started = time.perf_counter()
    reports = evaluate_sae_dir(model, args.out / "saes")
    summary["eval_wall_seconds"] = round(time.perf_counter() - started, 1)
    for name, site in trained.items():
        report = reports[name]
        summary["sites"][name] = {
            "tokens": site.record["tokens"], "training_samples": site.record["training_samples"],
            "harvest_seconds_shared": site.record["harvest_seconds_shared"],
            "train_seconds": site.record["train_seconds"], "fvu": report["fvu"], "l0": report["l0"],
            "dead_share": report["dead_share"], "ce_clean": report["ce_clean"], "ce_spliced": report["ce_spliced"],
            "ce_recovered_zero": report["ce_recovered_zero"], "ce_recovered_mean": report["ce_recovered_mean"],
            "fvu_by_language": report["fvu_by_language"],
        }
    if not args.skip_features:
        started = time.perf_counter()
        report = run_feature_analysis(model, load_sae_dir(args.out / "saes", model),
                                      FeatureAnalysisConfig(target=args.target))
        write_report(report, args.out / f"features_{args.target}")
        summary["features_wall_seconds"] = round(time.perf_counter() - started, 1)
        summary["features"] = {
            "top_target": report.features[:5],
            "top_english": [f for f in report.features if f["side"] == "english"][:5],
            "n_kept": {side: sum(f["side"] == side for f in report.features) for side in ("target", "english")},
            "langfir": report.langfir[:10], "n_langfir": len(report.langfir),
            "n_neurons": len(report.neurons), "tracing_checks": report.tracing_checks,
            "ablation": report.ablation, "timings": report.provenance["timings_seconds"],
        }
    atomic_write_json(args.out / "summary.json", summary)
    print(json.dumps(summary, indent=2, ensure_ascii=False, default=str))


if __name__ == "__main__":
    main()
