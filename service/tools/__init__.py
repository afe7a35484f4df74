"""Tools around the service: the event player, the embedded emulator, the demo, replay, the
events catalog. The worker never imports them."""
