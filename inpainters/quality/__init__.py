"""Quality scorers for forgeries behind one `Scorer` interface, looked up by name in `inpainters.quality.registry`."""
