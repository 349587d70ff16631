"""Stand-in for ComfyUI-MultiGPU: another node pack registering the seed's key for its own
(torch) DisTorch2 CLIP Vision loader, as it does in its __init__.py."""


class MultiGPUCLIPVisionLoader:
    RETURN_TYPES = ("CLIP_VISION",)
    FUNCTION = "override"
    CATEGORY = "multigpu/distorch_2"


NODE_CLASS_MAPPINGS = {
    "CLIPVisionLoaderMultiGPU": MultiGPUCLIPVisionLoader,
    "CLIPVisionLoaderDisTorch2MultiGPU": MultiGPUCLIPVisionLoader,
}
NODE_DISPLAY_NAME_MAPPINGS = {"CLIPVisionLoaderDisTorch2MultiGPU": "CLIPVisionLoaderDisTorch2MultiGPU"}
