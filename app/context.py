"""What an accuracy should be read against (chance, the linear probe, the parent): the
engine's `e2vpt_core.report.context`, which the HTML report reads too, under the name the
pages import."""

from e2vpt_core.report.context import (
    accuracy,
    accuracy_text,
    class_names,
    labelled_references,
    linear_probe,
    num_classes,
    overlay_references,
    reference_label,
    references,
    with_references,
)

__all__ = ["accuracy", "accuracy_text", "class_names", "labelled_references", "linear_probe",
           "num_classes", "overlay_references", "reference_label", "references",
           "with_references"]
