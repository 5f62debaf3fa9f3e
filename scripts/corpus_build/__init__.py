"""The steps of ``scripts/build_corpus.py``, one module per source (see that script's docstring)."""
