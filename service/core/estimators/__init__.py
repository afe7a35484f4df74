"""The wait estimate's models: the seam and the options it reads (``base``), the estimators
by name and the one place options are made (``registry``), and each model in its own
module (``hinge``)."""
