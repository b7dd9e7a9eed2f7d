"""Trainer callbacks the tests share."""

from transformers import TrainerCallback


class StopAt(TrainerCallback):
    """An interruption: the same recipe, the process just ends after optimizer step `step` (after its save)."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True
