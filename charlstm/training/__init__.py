"""Training a model.

    setup            preparing a run: the text, tokenizer, model, optimizer and data (new or resumed)
    trainer          the loop: train steps, validation, checkpoints, stopping
    finetune         starting from another run's weights (--init-from)
    sizing           --size auto: the model that fits the time budget on this machine
    watching         samples and TensorBoard while training
    tensorboard_log  the optional TensorBoard writer
"""
