"""Text in, token ids out: reading text safely, a corpus of many files, tokenizers, the token file
and the ``(T, B)`` layout of truncated BPTT.

    text        TextSource: one file or text, decoded and checked, read in passes
    corpus      Corpus: many files (a directory or a glob) read as one text
    source      Source: what training reads, a TextSource or a Corpus, without asking which
    tokenizers  char, byte and SentencePiece tokenizers and their records
    batches     the token file, the held-out split, the (T, B) layout and its windows
"""
