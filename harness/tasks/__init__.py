"""Face pipeline geometry: pure numpy/OpenCV functions from images + raw model outputs to per-sample fields.

Nothing here loads a model or touches a runtime: runners return raw arrays, these modules decide what they mean.
"""
