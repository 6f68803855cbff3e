"""lugha.training: the LowCLIP-style dual encoder, adapters and trainer (needs the ``[train]`` extra).

Importing this package is cheap; torch is imported by the submodules that need it.
"""
