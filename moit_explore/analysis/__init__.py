"""Analysis of features, labels and run directories: NumPy arrays and DataFrames in and out.
Imports ``maths`` and ``training`` only.
"""
