"""Reproduction of the 'spines' paper; see README.md in this folder."""
