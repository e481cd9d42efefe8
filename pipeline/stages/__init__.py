"""Pipeline stages.  Each module holds one stage: a class built from the Config whose
``__call__`` maps a batch (dict of numpy arrays, one entry per image) to a batch, and whose
``resources(cfg)`` says what it asks Ray for.  Rows whose ``status`` is not ``ok`` pass through
untouched; a failure inside a stage marks that one row and never drops it."""
