"""The Kafka wire protocol, sans I/O.

`codec` turns bytes into request objects and response objects into bytes
(kafka-python's generated classes do the field encoding); `handlers/` holds
one small module per API, each an async function from a request object and a
`BrokerContext` to a response object; `dispatch` ties the two together. No
module here opens a socket: `reference.server` is the thin TCP edge.
"""
