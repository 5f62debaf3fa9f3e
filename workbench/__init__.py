"""Language-steering workbench: study and steer which language a multilingual LLM speaks.

Built on TransformerLens hook points and SAELens dictionaries. Start with :func:`workbench.models.load_model`.
"""

__version__ = "0.1.0"
