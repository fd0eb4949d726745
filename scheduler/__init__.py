"""fleetsched's scheduling core: the model, the GPU catalog, MIG geometry, hooks, framework, placers.

Pure and world-agnostic: it reads no clock and does no I/O beyond its packaged data.
"""
