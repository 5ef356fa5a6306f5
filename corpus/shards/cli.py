"""`python -m corpus.shards build|inspect|merge`: the command line, and `inspect`, which prints a shards
directory's counts and decodes its first documents."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Optional, Sequence


from corpus.shards.read import (
    ShardsError, TokenShards, _load_manifest, check_tokenizer)
from corpus.tokenizer import Tokenizer

from corpus.shards.build import build_shards
from corpus.shards.write import merge_shard_dirs

log = logging.getLogger("corpus.shards")


# ----------------------------------------------------------------------------------------------------
# CLI


def inspect(path: str | os.PathLike, docs: int = 2, tokenizer: Optional[str] = None, chars: int = 200) -> str:
    """Counts per split, the bad-document tally, and the first `docs` documents of each split decoded."""
    p = Path(path)
    d = p.parent if p.is_file() else p
    m, _ = _load_manifest(d)
    lines = [f"{d}: {m['format']}, dtype {m['dtype']}, vocab {m['vocab_size']}, bos {m['bos_id']}, eos {m['eos_id']}, "
             f"tokenizer sha256 {m['tokenizer_sha256']}",
             f"{'split':<7}{'files':>6}{'docs':>12}{'tokens':>15}{'tokens/doc':>12}"]
    shards = {s: TokenShards(d, s) for s in m["splits"]}
    for s, sh in shards.items():
        lines.append(f"{s:<7}{len(sh.files):>6}{sh.num_docs:>12,}{sh.num_tokens:>15,}"
                     f"{sh.num_tokens / max(sh.num_docs, 1):>12.1f}")
    if "counts" in m:
        lines.append("documents: " + ", ".join(f"{k} {v:,}" for k, v in m["counts"].items()))
    tok_dir = Path(tokenizer) if tokenizer else d / "tokenizer"
    if docs and tok_dir.exists():
        tok = Tokenizer.load(tok_dir)
        check_tokenizer(m, tok.sha256)
        for s, sh in shards.items():
            for i in range(min(docs, sh.num_docs)):
                ids = sh.document(i)
                text = tok.decode(ids[1:-1])
                lines.append(f"--- {s} doc {i} ({len(ids)} tokens incl. bos and eos): "
                             f"{text[:chars]!r}{' ...' if len(text) > chars else ''}")
    elif docs:
        lines.append(f"(no tokenizer at {tok_dir}: pass --tokenizer PATH to decode documents)")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`build` (default; from --config), `inspect PATH`, `merge OUT IN [IN ...]`."""
    from common.config import ConfigError, add_config_args, config_from_args, save_resolved
    from common.log import setup_logging
    from corpus.tokenizer import TokenizerError

    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = argv.pop(0) if argv and argv[0] in ("build", "inspect", "merge") else "build"
    p = argparse.ArgumentParser(prog=f"python -m corpus.shards {cmd}", description=__doc__.split("\n")[0])
    if cmd == "build":
        add_config_args(p)
        p.add_argument("--workers", type=int, default=None, help="processes (default shards.workers; 0 = all cores)")
    elif cmd == "inspect":
        p.add_argument("path", help="a shards directory (or one of its .bin files)")
        p.add_argument("--docs", type=int, default=2, help="documents to decode per split")
        p.add_argument("--tokenizer", default=None, help="tokenizer to decode with (default PATH/tokenizer)")
    else:
        p.add_argument("out", help="output shards directory")
        p.add_argument("inputs", nargs="+", help="shards directories, merged in this order")
        p.add_argument("--shard-tokens", type=int, default=500_000_000)
    args = p.parse_args(argv)
    setup_logging()
    try:
        if cmd == "build":
            cfg = config_from_args(args)
            build_shards(cfg, workers=args.workers)
            save_resolved(cfg, Path(cfg.shards.out_dir) / "config.yaml")
            print(inspect(cfg.shards.out_dir, docs=0))
        elif cmd == "inspect":
            print(inspect(args.path, args.docs, args.tokenizer))
        else:
            merge_shard_dirs(args.inputs, args.out, args.shard_tokens)
            print(inspect(args.out, docs=0))
    except (ShardsError, TokenizerError) as e:
        log.error("%s", e)
        return 2
    except ConfigError as e:
        log.error("config error: %s", e)
        return 2
    return 0
