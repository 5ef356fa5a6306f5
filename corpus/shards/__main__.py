"""`python -m corpus.shards ...` (see corpus/shards/cli.py)."""
import sys

from corpus.shards.cli import main

sys.exit(main())
