"""`python -m pretrain.generate --checkpoint PATH --prompt TEXT`: see pretrain/generate/cli.py."""
import sys

from pretrain.generate.cli import main

sys.exit(main())
