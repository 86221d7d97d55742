"""A standalone C99 library for a model: no malloc, weights in flash in the stored format."""
