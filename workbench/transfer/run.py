"""One entry point for every transfer task."""

from __future__ import annotations

from workbench.backends import Model
from workbench.transfer.module_task import module_study
from workbench.transfer.study import TransferConfig, TransferResult, check_config
from workbench.transfer.translate_task import translate_study

__all__ = ["run_transfer"]


def run_transfer(model: Model, config: TransferConfig = TransferConfig(), *, progress: bool = True
                 ) -> TransferResult:
    """Run the study on ``model`` (the ``hf`` backend for LoRA); returns its rows and per-item scores."""
    check_config(config)
    study = translate_study if config.task == "translate" else module_study
    return study(model, config, progress=progress)
