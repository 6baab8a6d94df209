"""Hardware catalog (datasheet profiles) and measured profiles, as data files."""
