"""Task modules built on the vision backbones: one sub-package per paper (``tcpa``, ``dcal``, ...);
importing a sub-package registers its models, datasets and tasks in
:data:`interplay.vision.registry.REGISTRY`."""
