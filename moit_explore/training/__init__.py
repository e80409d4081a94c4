"""Training: configs and presets, data sets, batch pipelines, methods, the epoch loop, run
directories and data-parallel training. Imports ``maths`` only.
"""
