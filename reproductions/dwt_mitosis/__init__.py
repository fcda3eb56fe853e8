"""Reproduction of the 'dwt_mitosis' paper; see README.md in this folder."""
