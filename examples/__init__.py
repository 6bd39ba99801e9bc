"""Examples that extend the kit. Each module's docstring explains its use."""
