"""factory_boy factories, one module per app: rows a test needs, with every field it does not care about
filled in (real image files included), so a test names only what it is about."""
