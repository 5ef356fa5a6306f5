"""gluonnlp 0.10's `SentencepieceTokenizer(path, num_best=0, alpha=0)`, as KoGPT2's README builds it, under
the sentencepiece this project pins.

gluonnlp documents num_best 0 or 1 as "no sampling", but its `__call__` always calls
`SampleEncodeAsPieces(text, num_best, alpha)`. sentencepiece up to 0.1.96 encoded without sampling
for those values; every release since (0.1.97 .. 0.2.x, the only ones with Python 3.11/3.12 wheels)
raises "When enable_sampling is True, We must specify nbest_size > 1 ...". No sentencepiece that
installs here keeps the seed's line working, so `fix_sentencepiece_tokenizer()` (called by every
function of pretrain.api) replaces `gluonnlp.data.SentencepieceTokenizer.__call__` with one that,
for num_best 0 or 1, returns `EncodeAsPieces(text)` (the best segmentation, what gluonnlp documents
and old sentencepiece did) and otherwise calls the original. Only calls that raise today change
behaviour; it logs once when it applies. tests/test_kogpt2_loops.py runs the seed's loops through it.
"""
from __future__ import annotations

import logging

log = logging.getLogger("pretrain.api")

_MARK = "_kogpt_no_sampling_for_best"


def fix_sentencepiece_tokenizer() -> bool:
    """Make gluonnlp's SentencepieceTokenizer(num_best in {0, 1}) encode without sampling; True when
    gluonnlp is installed (patched now or before), False when it is not (nothing to fix)."""
    try:
        from gluonnlp.data import SentencepieceTokenizer
    except ImportError:       # a torch-only install: the seed's gluonnlp lines cannot run anyway
        return False
    if getattr(SentencepieceTokenizer.__call__, _MARK, False):
        return True
    original = SentencepieceTokenizer.__call__

    def __call__(self, sample: str) -> list[str]:
        if self._nbest in (0, 1):          # gluonnlp: "If num_best = {0,1}, no sampling is performed"
            return self._processor.EncodeAsPieces(sample)
        return original(self, sample)

    setattr(__call__, _MARK, True)
    __call__.__doc__ = original.__doc__
    SentencepieceTokenizer.__call__ = __call__
    log.info("gluonnlp.data.SentencepieceTokenizer: num_best 0/1 now encodes without sampling, as gluonnlp "
             "documents (sentencepiece >= 0.1.97 rejects the sampling call gluonnlp 0.10 makes); "
             "see pretrain/interop/gluonnlp_fix.py")
    return True
