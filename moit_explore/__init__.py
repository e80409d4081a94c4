"""moit-explore: MOIT and MOIT+ (Ortego et al., CVPR 2021) for robustness to label noise.

The core modules follow the paper's concepts: ``noise`` (synthetic label noise), ``datasets``,
``models`` (PreAct ResNet-18 with classifier and projection heads), ``augment``, ``memory``
(cross-batch memory), ``losses`` (interpolated contrastive, classification and MOIT+ losses),
``detection`` (kNN soft labels and class-balanced clean selection) and ``train``.
"""

__version__ = "0.1.0"
