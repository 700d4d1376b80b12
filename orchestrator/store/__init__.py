"""Where a window's state lives beside its journal: blobs with compare-and-swap, the lease,
the journal's replica and the locks."""
