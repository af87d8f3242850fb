"""The direct ``sleap-nn train`` command the benchmarks time sleap-rtc against.

One place for it, so every bench's baseline is the same run: the demo config on
the demo labels, the given epochs, on the CPU, with the checkpoint written and no
progress bar, as the local backend runs it.
"""

from __future__ import annotations

from pathlib import Path

from sleap_rtc.engine.commands import default_sleap_nn_command, hydra_quote


def train_argv(config: Path, labels: Path, models: Path, name: str, epochs: int) -> list[str]:
    return [
        *default_sleap_nn_command(),
        "train",
        "--config",
        str(config),
        f"++data_config.train_labels_path=[{hydra_quote(str(labels))}]",
        f"++trainer_config.ckpt_dir={hydra_quote(str(models))}",
        f"++trainer_config.run_name={name}",
        "++trainer_config.save_ckpt=true",
        "++trainer_config.enable_progress_bar=false",
        f"++trainer_config.max_epochs={epochs}",
        "++trainer_config.trainer_accelerator=cpu",
    ]
