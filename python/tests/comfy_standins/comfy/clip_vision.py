"""Stand-in for comfy.clip_vision: the ``Output`` class core's ClipVisionModel.encode_image
returns (a plain object whose attributes are also readable and settable as items)."""


class Output:
    def __getitem__(self, key):
        return getattr(self, key)

    def __setitem__(self, key, item):
        setattr(self, key, item)
