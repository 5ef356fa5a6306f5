"""The data stages: raw text -> clean documents -> tokenizer -> token shards (`python -m corpus clean|tokenizer|shards`).

Modules: `readers` (one reader per input family) and `wiki` (MediaWiki markup), `plan` (inputs -> work
units), `clean` (normalisation and filters), `dedup` (exact and MinHash near-duplicates), `pipeline`
(the clean stage), `docs` (the clean-part format and the train/valid split of documents), `split` and
`sentence_sample` (sentences for the tokenizer), `tokenizer` (SentencePiece training and the Tokenizer
wrapper), `shards/` (token shards: encode, write, read), `errors`.
"""
