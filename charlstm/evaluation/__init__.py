"""Measuring a model on text.

    evaluate    loss over a stream of text (warm parallel streams), the eval report
    adaptation  dynamic evaluation: score a segment, then learn from it
    score       per-line log-probabilities and bits per character
"""
