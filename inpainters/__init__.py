"""Inpainting methods behind one `Inpainter` interface, looked up by name in `inpainters.registry`."""
