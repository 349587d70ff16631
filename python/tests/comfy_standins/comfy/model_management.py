"""Stand-in for comfy.model_management: outputs go to the CPU; unloads are counted."""

import torch

INTERMEDIATE = torch.device("cpu")
unload_all_models_calls = 0


def intermediate_device():
    return INTERMEDIATE


def unload_all_models():
    global unload_all_models_calls
    unload_all_models_calls += 1
