"""Feature extractors: batch stage functions turning decoded records into the `x` column."""
