"""The HTML report: results table, training curve, example grid with DCSM maps, colour legend."""

from wsseg.report.html import build_report, load_scores
from wsseg.report.plots import colour_labels, plot_training_curve

__all__ = ["build_report", "colour_labels", "load_scores", "plot_training_curve"]
