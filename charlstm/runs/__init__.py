"""What a run leaves on disk, and reading it back safely.

    checkpoint  the checkpoint format: payload, save, find, load (weights_only)
    checks      the checks on a checkpoint's untrusted contents: model config, weights, training state
    digest      checksums over a payload
    lock        one writer per run directory
    directory   the run directory: preparing it, config.json, metrics, the token file, resume plans
    info        what ``charlstm info`` reads: a run's record, metrics and status
"""
