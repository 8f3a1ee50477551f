"""Channels code as its users wrote it, ported by changing imports and settings only.

Each module says, in a comment on its import lines, what the Channels
original imported. ``chat4`` is the Channels 4 tutorial's sync chat; the
rest is Channels 1.x: a multi-room chat with session decorators and a
background channel, data binding behind 1.0 and 1.1 demultiplexers, and
routing as 1.x accepted it (a dict of dotted paths, dotted strings in
route(), route_class() and include(), ``CHANNEL_LAYERS["default"]["ROUTING"]``).
Served with ``WSBRIDGE_TEST_LEGACY=1`` (see djtest/settings.py).
"""
