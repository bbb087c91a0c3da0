"""plotlib: PLOT (progressive localization via optimal transport) versus DAS, as a benchmark suite."""
__version__ = "0.1.0"
