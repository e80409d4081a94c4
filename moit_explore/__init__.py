"""moit-explore: MOIT and MOIT+ (Ortego et al., CVPR 2021) for robustness to label noise.

The package's layers are folders; each imports only the layers listed before it:

- ``maths``: pure functions and modules on tensors and arrays (noise, augment, memory, losses,
  models, neighbors, detection, validation);
- ``training``: configs and presets, data, pipelines, methods, the epoch loop, run directories;
- ``analysis``: NumPy / DataFrame in and out (label issues, collapse, projection, reports);
- ``course``: figures, widgets, the notebooks' cached runs and ``make demo``;
- ``cli``: the command line, on top.
"""

__version__ = "0.1.0"
