"""Reproduction of the 'mitos_rcnn' paper; see README.md in this folder."""
