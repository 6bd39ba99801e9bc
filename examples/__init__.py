"""Examples that extend the kit; each module says how to use it."""
