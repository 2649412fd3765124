"""Floor 3: immutable, versioned datasets (splits, manifests, archives, downloads). Reads annotation."""
