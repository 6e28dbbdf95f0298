"""``charlstm compress``: a trained model as the dictionary of a lossless compressor.

    tokens      any bytes as the model's tokens and back, exactly (a side channel for the rest)
    streams     the probabilities: B streams stepped in lockstep, the cache, dynamic evaluation
    coder       compress / decompress with constriction's range coder
    format      the .clstm file: header, side channel, coded words, checksums
    settings    CompressConfig and the streams' layout
"""
