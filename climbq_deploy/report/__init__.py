"""``climbq report``: a Markdown/HTML report with plots from training runs and their deployed
targets (issue 7). ``make_report(RUNS, out)`` is the whole of it; the modules are
:mod:`~climbq_deploy.report.collect` (read JSONs with their sources),
:mod:`~climbq_deploy.report.analysis` (weight quantization error, HomoVar weights),
:mod:`~climbq_deploy.report.deployment` (the model to ship against plain int8, the deployment
tables), :mod:`~climbq_deploy.report.plots`, :mod:`~climbq_deploy.report.tables` and
:mod:`~climbq_deploy.report.render`."""

from climbq_deploy.report.make import PLOT_FILES, ReportFiles, make_report

__all__ = ["PLOT_FILES", "ReportFiles", "make_report"]
