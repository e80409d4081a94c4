"""The course: figures, interactive widgets, the notebooks' cached runs and ``make demo``.
Imports ``maths``, ``training`` and ``analysis``; the only layer that needs the notebook extras.
"""
