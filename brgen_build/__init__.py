"""brgen: rebuild BR-Gen and other localized-forgery datasets from the original photo archives."""

__version__ = "0.1.0"
