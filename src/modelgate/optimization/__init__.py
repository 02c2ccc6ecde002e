"""Optimized candidates of an ONNX model version, measured against the original.

``modelgate optimize`` (cli/optimize.py) drives it: ``inputs`` draws the reference inputs,
``candidates`` writes the optimized ONNX files, ``measurement`` runs every file through the
server's own runtime and compares, ``registration`` installs one as a new version. This
package imports ``onnx`` and ``onnxruntime.quantization``, which the server never does: it is
imported only by the ``optimize`` command.
"""
