"""One self-contained folder per paper; see common/registry.py for the list."""
