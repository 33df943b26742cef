"""quantcalc_ui: the calculator's Panel-free pieces (numpy + fpdf2 only), shared by the app and its tests.

* :mod:`quantcalc_ui.settings_words` -- the app's settings (parameter name -> value) and data source in words,
  showing only what applies;
* :mod:`quantcalc_ui.report` -- :class:`~quantcalc_ui.report.ReportModel`, everything the PDF report shows as
  plain data, built from a :class:`quantcore.report.Comparison`;
* :mod:`quantcalc_ui.pdf` -- ``render_pdf(model) -> bytes`` (fpdf2 is imported only inside it).

Nothing here is imported by ``import quantcalc_ui``: the browser bundle installs this package with quantcore,
and the PDF library loads only when a report is asked for.
"""
