"""What a person reads: formatted cells, terminal tables, reports, plots."""
