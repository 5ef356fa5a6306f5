"""`python -m pretrain.evaluate`: downstream fine-tuning and perplexity. The code is in pretrain/eval/."""
import sys

from pretrain.eval.config import EvalConfig
from pretrain.eval.evaluate import main, run

__all__ = ["EvalConfig", "main", "run"]

if __name__ == "__main__":
    sys.exit(main())
