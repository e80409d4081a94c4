"""The maths of MOIT: pure functions on tensors and arrays, shapes in the docstrings.

Imports nothing from the other layers, and no notebook extra.
"""
