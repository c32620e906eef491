"""The build stages, one module each: reals, masks, inpaint."""
