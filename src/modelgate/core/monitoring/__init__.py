"""Monitoring: how a version behaves live against its reference.

The monitor listener (``monitor``) with its windows (``windows``) and reports (``reports``),
data drift (``drift``, ``text_drift``), anomaly scores and the detector that acts on them
(``anomaly_scores``, ``anomaly``), concept drift against ground truth (``concept``,
``classification_metrics``), built-in alerts (``alerts``), recorded predictions with
their feedback (``feedback_recorder``, ``prediction_rows``, ``predictions``, ``feedback``,
``feedback_subjects``, ``ports``), and the training datasets of labelled predictions joined
with their logged payloads (``datasets``): the learning loop.
"""
