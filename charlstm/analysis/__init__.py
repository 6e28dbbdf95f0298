"""Looking inside the LSTM.

    inspection     cells and gates over a text: activations, correlations with text features
    memory_tasks   the long-range tasks (recall, copy) and their small models
    memory_probes  gradients through time and forget gates on the trained models
    experiment     charlstm experiment long-range: every cell, distance and seed
"""
