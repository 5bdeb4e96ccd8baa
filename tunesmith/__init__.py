"""Tunesmith: a browser studio for fine-tuning open LLMs.

The code lives in the top-level folders engine/, studio/, kernels/ and cli/,
mapped here by pyproject.toml ([tool.setuptools.package-dir]) as tunesmith.engine, tunesmith.studio, ...
"""

__version__ = "0.1.0"
