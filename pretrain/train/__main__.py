"""`python -m pretrain.train --config C`: see pretrain/train/cli.py."""
import sys

from pretrain.train.cli import main

sys.exit(main())
