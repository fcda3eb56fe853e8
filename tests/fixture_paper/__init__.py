"""fixture_paper: the smallest paper built only from the shared skeleton (see README.md)."""
