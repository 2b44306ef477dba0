"""What each pipeline step does, as plain functions over local paths, testable without kfp:
the components (:mod:`components`) are thin shells over them."""
