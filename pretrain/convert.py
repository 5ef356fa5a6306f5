"""`python -m pretrain.convert`: KoGPT2 v1 `.params` <-> checkpoint. The code is in pretrain/interop/kogpt2.py."""
import sys

from pretrain.interop.kogpt2 import ConvertError, export_kogpt2_v1, import_kogpt2_v1, main

__all__ = ["ConvertError", "export_kogpt2_v1", "import_kogpt2_v1", "main"]

if __name__ == "__main__":
    sys.exit(main())
