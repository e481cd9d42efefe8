"""Tools built on the core: report, calibrate, nightly, bench, demo, explain, samples."""
