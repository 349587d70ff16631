"""Stand-in for ComfyUI's comfy package: model_management and clip_vision (see each module)."""
