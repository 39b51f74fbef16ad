"""rxguard: intelligent supervision of excessive drug prescribing and purchasing.

The domain package, shipped as a Lambda layer (`layers/`) and imported by the handlers
in `functions/`, the offline harness and the CLI alike.
"""

__version__ = "0.1.0"
