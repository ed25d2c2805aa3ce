"""Statistics of measurements, pure numpy (and scipy's t quantiles): the bottom layer, so the pipeline that logs
an interval and the report that compares two runs use the one definition.

- bootstrap: quality intervals over scoring windows, and the paired difference of two runs on the same windows.
- repeats: spreads and intervals of a speed measured over repeats.
- items: task answers against the baseline's on the same items (flips, paired over items).
- histogram: percentiles of a per-token quantity from fixed bins, in constant memory.
"""
