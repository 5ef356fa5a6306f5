"""Downstream evaluation: `python -m pretrain.evaluate --task nsmc|paraphrase|perplexity`.

Modules: `evaluate` (the command line, model loading, result tables), `config` (EvalConfig, its
settings), `finetune` (classifier head, fine-tuning loop, sliding-window perplexity), `tasks` (the
NSMC and question-pair files: reading and checking them).
"""
