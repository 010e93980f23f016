"""adtutor: industrial image anomaly detection as literate labs. `import adtutor` stays light; heavy parts load on use."""
__version__ = "0.1.0"

def __getattr__(name):
    "Lazy top-level shortcuts: `adtutor.evaluate(model, test)`."
    if name == 'evaluate':
        from .evaluation import evaluate
        return evaluate
    raise AttributeError(f"module 'adtutor' has no attribute {name!r}")
