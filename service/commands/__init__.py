"""The commands of ``wait-times``, registered in ``service.cli``: each one's options and
handler (``aws``: the commands that call AWS; ``offline``: replay and schema), what they
share (``base``, ``options``) and how a signal stops them (``stop``)."""
