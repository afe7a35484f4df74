"""The events catalog: recorded examples (data files) and the schema generator."""
