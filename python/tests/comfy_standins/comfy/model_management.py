"""Stand-in for comfy.model_management, with the behaviour the node relies on as ComfyUI
v0.3.64 has it: loaded models are kept in ``current_loaded_models``, each with the device it is
loaded on; ``free_memory(memory_required, device)`` unloads models loaded on that device only
(all of them when ``memory_required`` exceeds any free memory); ``unload_all_models()`` is
``free_memory`` on ``get_torch_device()``, ComfyUI's main device. Outputs go to the CPU."""

import torch

INTERMEDIATE = torch.device("cpu")
# ComfyUI's main device on a GPU machine; tests may change it.
TORCH_DEVICE = torch.device("cuda:0")


class LoadedModel:
    """What ComfyUI keeps per loaded model: its name (here) and the device it is loaded on."""

    def __init__(self, name, device):
        self.name = name
        self.device = torch.device(device)
        self.unloaded = False

    def model_unload(self, memory_to_free=None):
        self.unloaded = True
        return True


current_loaded_models: list = []
free_memory_calls: list = []


def load(name, device):
    """Test helper: a model ComfyUI holds on ``device``."""
    m = LoadedModel(name, device)
    current_loaded_models.insert(0, m)
    return m


def get_torch_device():
    return TORCH_DEVICE


def intermediate_device():
    return INTERMEDIATE


def free_memory(memory_required, device, keep_loaded=[]):
    free_memory_calls.append((memory_required, device))
    unloaded = []
    for m in list(current_loaded_models):
        if m.device == device and m not in keep_loaded and m.model_unload(memory_required):
            current_loaded_models.remove(m)
            unloaded.append(m)
    return unloaded


def unload_all_models():
    free_memory(1e30, get_torch_device())
