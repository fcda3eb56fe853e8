"""Reproduction of the 'fcn_segmentation' paper; see README.md in this folder."""
