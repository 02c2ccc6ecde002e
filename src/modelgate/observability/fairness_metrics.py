"""Prometheus gauges of fairness audits, read at each scrape from the background audit's last
reports (:class:`~modelgate.fairness.watch.FairnessWatch`; a scrape never runs an audit):

- ``modelgate_fairness_demographic_parity_difference{model,version,attribute}``, and
  ``..._demographic_parity_ratio``, ``..._equalized_odds_difference``,
  ``..._equal_opportunity_difference``: between the groups large enough to judge (absent
  while fewer than two are);
- ``modelgate_fairness_judged{model,version,attribute}``: 1 when at least two groups are
  large enough to judge, else 0;
- ``modelgate_fairness_group_rows{model,version,attribute,group}``: labelled rows per group;
- ``modelgate_fairness_group_too_small{model,version,attribute,group}``: 1 for a group under
  ``min_group_size`` labelled rows (reported, not judged), else 0;
- ``modelgate_fairness_selection_rate`` and ``modelgate_fairness_accuracy``
  ``{model,version,attribute,group}``: per group large enough to judge;
- ``modelgate_fairness_audit_timestamp_seconds{model}``: when the model's last audit ran.

Per attribute at most the :data:`MAX_GROUPS` largest groups are exported, so a column with
many distinct values cannot flood the scrape.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from modelgate.fairness.watch import FairnessWatch

__all__ = ["MAX_GROUPS", "FairnessCollector"]

MAX_GROUPS = 50

_GAPS = (
    ("demographic_parity_difference", "Largest minus smallest selection rate between groups"),
    ("demographic_parity_ratio", "Smallest over largest selection rate between groups"),
    ("equalized_odds_difference", "Larger of the TPR and FPR differences between groups"),
    ("equal_opportunity_difference", "Largest minus smallest true positive rate between groups"),
)


class FairnessCollector:
    """Registered on the metrics registry when the background audit runs."""

    def __init__(self, watch: FairnessWatch) -> None:
        self.watch = watch

    def collect(self) -> Iterator[Metric]:
        attribute_labels = ("model", "version", "attribute")
        group_labels = (*attribute_labels, "group")
        gaps = {
            name: GaugeMetricFamily(f"modelgate_fairness_{name}", text, labels=attribute_labels)
            for name, text in _GAPS
        }
        judged = GaugeMetricFamily(
            "modelgate_fairness_judged",
            "1 when at least two groups have enough labelled rows to judge",
            labels=attribute_labels,
        )
        rows = GaugeMetricFamily(
            "modelgate_fairness_group_rows", "Labelled rows of a group", labels=group_labels
        )
        small = GaugeMetricFamily(
            "modelgate_fairness_group_too_small",
            "1 for a group with too few labelled rows to judge (reported, not judged)",
            labels=group_labels,
        )
        selection = GaugeMetricFamily(
            "modelgate_fairness_selection_rate",
            "Share of a group's rows predicted positive",
            labels=group_labels,
        )
        accuracy = GaugeMetricFamily(
            "modelgate_fairness_accuracy",
            "Share of a group's rows predicted right",
            labels=group_labels,
        )
        audited = GaugeMetricFamily(
            "modelgate_fairness_audit_timestamp_seconds",
            "When the model's last background fairness audit ran (Unix time)",
            labels=("model",),
        )
        for model, (report, at) in sorted(self.watch.reports.items()):
            audited.add_metric((model,), at.timestamp())
            for version in report.versions:
                for attribute in version.attributes:
                    key = (model, version.version, attribute.attribute)
                    judged.add_metric(key, 1 if attribute.status == "ok" else 0)
                    for name, family in gaps.items():
                        value: float | None = getattr(attribute, name)
                        if value is not None:
                            family.add_metric(key, value)
                    largest = sorted(attribute.groups, key=lambda g: -g.count)[:MAX_GROUPS]
                    for group in largest:
                        labels = (*key, group.group)
                        rows.add_metric(labels, group.count)
                        small.add_metric(labels, 0 if group.sufficient else 1)
                        if group.selection_rate is not None:
                            selection.add_metric(labels, group.selection_rate)
                        if group.accuracy is not None:
                            accuracy.add_metric(labels, group.accuracy)
        yield from gaps.values()
        yield judged
        yield rows
        yield small
        yield selection
        yield accuracy
        yield audited
