"""charlstm: train LSTM language models on your own text, sample from them, measure them."""

__version__ = "0.1.0"
