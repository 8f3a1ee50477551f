"""Channels 1.0's routing dict: channel -> dotted path of the consumer."""

channel_routing = {
    "websocket.connect": "djtest.legacy.chat.ws_connect",
    "websocket.receive": "djtest.legacy.chat.ws_receive",
    "websocket.disconnect": "djtest.legacy.chat.ws_disconnect",
}
