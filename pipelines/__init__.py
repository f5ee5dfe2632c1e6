"""The pipeline DSL (wiring only), its compiler entry point and the local runner."""
