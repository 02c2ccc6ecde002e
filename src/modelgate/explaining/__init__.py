"""Adapters of explanations (:mod:`modelgate.core.serving.attribution`): KernelSHAP, from
the SHAP library, imported only when a request asks for an explanation."""
