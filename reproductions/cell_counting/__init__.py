"""Reproduction of the 'cell_counting' paper; see README.md in this folder."""
