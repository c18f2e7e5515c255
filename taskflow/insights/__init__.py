"""Insights: trends, bottlenecks, forecasts and advice from the stored metrics (issue 14,
being built). :mod:`taskflow.insights.series` reads the metrics as time series."""
