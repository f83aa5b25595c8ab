"""Training: one optimisation loop, plain and block-incremental training, run directories."""
from .checkpoint import (
    RunDir,
    check_output_dir,
    finish_run,
    load_block_assignment,
    load_block_snapshot,
    load_model_file,
    open_run,
    save_model,
)
from .loop import OptimConfig, cross_entropy, fine_tune, make_optimizer, make_scheduler, run_epochs
from .trainer import TrainConfig, TrainResult, assign_blocks, prepare_model, train, train_block

__all__ = ["RunDir", "check_output_dir", "finish_run", "load_model_file", "open_run", "save_model", "OptimConfig",
           "cross_entropy", "fine_tune", "make_optimizer", "make_scheduler", "run_epochs", "TrainConfig",
           "TrainResult", "assign_blocks", "load_block_assignment", "load_block_snapshot", "prepare_model",
           "train", "train_block"]
