"""The live wait board (``wait-times board``): a web page per tenant fed by its own queue."""
