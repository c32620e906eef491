"""NFA-ViT, the noise-guided forgery detector of BR-Gen: model, data loading, training, evaluation and metrics.

The command line (`brgen train-detector`, `brgen eval-detector`) lives in `brgen_build` and calls into this
package. This package imports nothing from `brgen_build` except the shared error type.
"""
