"""The smallest real pipeline config: dims of 4-16, 1-2 epochs (shared by the CLI and registry tests)."""

TINY_PIPELINE = {
    "kg.embedding_dim": 4,
    "kg.epochs": 1,
    "kg.early_stopping_frequency": 1,
    "kg.eval_fraction": 0.1,
    "finetune.dim": 8,
    "finetune.hidden": 16,
    "finetune.epochs": 2,
}
