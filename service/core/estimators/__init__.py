"""The wait estimate's models: the seam (``base``), the options that select one and its
registry (``options``), and each model in its own module (``hinge``, ``linear``)."""
