"""Where rows come from and go to: the listing (source) and the part files (sink)."""
