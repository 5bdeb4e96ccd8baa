"""Translations of the studio's strings, one module per language, keyed by the English text."""
