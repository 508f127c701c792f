"""mtfap: multi-task facial attribute prediction with structured heads (MTFAP).

>>> import mtfap
>>> model = mtfap.load_model()                      # the default model shipped in the package
>>> faces = mtfap.analyze("photo.jpg", model=model)  # doctest: +SKIP
>>> faces[0].attributes["Smiling"]                    # doctest: +SKIP

``load_model`` opens any trained model (shipped by name, an exported folder, a run folder) as a
``mtfap.model.Predictor``; ``analyze`` finds, aligns and describes every face of a photo.
"""

from mtfap.version import __version__

# The doors are imported on first use: `import mtfap` (and every `mtfap` command) would
# otherwise pay for torch and the models' code before doing anything.
_LAZY = {"load_model": "mtfap.model", "analyze": "mtfap.applications.analyze"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mtfap' has no attribute {name!r}")


__all__ = ["__version__", "load_model", "analyze"]
