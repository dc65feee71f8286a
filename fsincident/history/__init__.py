"""The daemon's own downsampled history of the series its rules, SLOs and UI cards read (``history:``), and range
reads over it (or over a ``prometheus`` source) for the web UI."""

from fsincident.history.service import HistoryError, HistoryService, SeriesData, series_id, wanted_metrics

__all__ = ["HistoryError", "HistoryService", "SeriesData", "series_id", "wanted_metrics"]
