"""Reproductions of the papers' figures: one importable module per figure, each with `main(argv)`."""
