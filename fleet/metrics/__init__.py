"""Numbers and decisions: metrics with bootstrap intervals, paired tests, timing and cost, drift statistics
and the promotion gate."""
