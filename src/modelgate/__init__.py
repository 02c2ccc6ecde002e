"""modelgate: serve AI models as a production API.

The package keeps its import light: importing ``modelgate`` pulls in no web, gRPC or runtime
library. The server is built by :mod:`modelgate.boot` and run by :mod:`modelgate.server`.
"""

__version__ = "0.1.0"
