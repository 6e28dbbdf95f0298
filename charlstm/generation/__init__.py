"""Writing text with a model.

    sampling    the filters on logits (pure functions) and the generator
    beam        batched beam search
    chat        a session that keeps the hidden state between turns
"""
