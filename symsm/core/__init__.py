"""What every stage shares: errors, the function table, the cache, the thread pool, array checks, progress,
template rendering. Imports nothing from the other stages."""
