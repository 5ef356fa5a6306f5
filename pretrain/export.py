"""`python -m pretrain.export`: checkpoint <-> Hugging Face directory. The code is in pretrain/interop/hf.py."""
import sys

from pretrain.interop.hf import export_hf, import_hf, main

__all__ = ["export_hf", "import_hf", "main"]

if __name__ == "__main__":
    sys.exit(main())
